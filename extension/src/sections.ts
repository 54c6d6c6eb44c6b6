/**
 * One list per kind of work. Each renderer turns the API's rows into DOM; it owns no state: the panel
 * passes what to do on a click.
 */
import { IDatasetRow, IJob, IModelVersion, IRun, IServer } from './types';

export function element(tag: string, attributes: Record<string, string> = {}, text = ''): HTMLElement {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  node.textContent = text;
  return node;
}

function headline(values: Record<string, number>): string {
  return Object.entries(values)
    .filter(([name]) => name.includes('accuracy') || name.includes('loss'))
    .map(([name, value]) => `${name} ${value}`)
    .join(' · ');
}

export interface IActions {
  insert(magic: string): void;
  cancelJob(job: IJob): void;
  stopServer(server: IServer): void;
  logURL(relative: string): string;
}

function section<T>(title: string, key: string, items: T[], render: (item: T) => HTMLElement): HTMLElement {
  const node = element('section', { 'data-nbscale-section': key });
  node.appendChild(element('h3', {}, `${title} (${items.length})`));
  const list = element('ul');
  items.forEach(item => list.appendChild(render(item)));
  node.appendChild(list);
  return node;
}

export function datasetsSection(rows: IDatasetRow[], actions: IActions): HTMLElement {
  return section('Datasets', 'datasets', rows, d => {
    const row = element('li', { 'data-nbscale-dataset': d.dataset, title: `${d.schema}\nfrom ${d.source}` });
    row.appendChild(element('a', { href: '#' }, d.dataset));
    row.appendChild(
      element(
        'span',
        { class: 'nbscale-detail' },
        d.broken ? ` damaged: ${d.broken}` : ` ${d.rows} rows, ${d.columns} columns`
      )
    );
    row.onclick = event => {
      event.preventDefault();
      actions.insert(`%%train --data ${d.dataset} --epochs 5 -o fit`);
    };
    return row;
  });
}

export function jobsSection(jobs: IJob[], actions: IActions): HTMLElement {
  return section('Jobs', 'jobs', jobs, j => {
    const row = element('li', { 'data-nbscale-job': `${j.kernel}/${j.id}`, 'data-state': j.state });
    row.appendChild(element('span', {}, `${j.title} — `));
    row.appendChild(element('b', { class: 'nbscale-state' }, j.state));
    row.appendChild(element('span', { class: 'nbscale-detail' }, j.progress ? ` ${j.progress}` : ''));
    if (j.state === 'running') {
      const cancel = element('button', { class: 'nbscale-cancel' }, 'Cancel');
      cancel.onclick = () => actions.cancelJob(j);
      row.appendChild(cancel);
    }
    if (j.log) {
      row.appendChild(element('a', { href: actions.logURL(j.log), target: '_blank', class: 'nbscale-link' }, ' logs'));
    }
    return row;
  });
}

export function runsSection(runs: IRun[], actions: IActions): HTMLElement {
  return section('Runs', 'runs', runs, r => {
    const row = element('li', { 'data-nbscale-run': r.id });
    const name = element('a', { href: '#' }, `${r.name || r.id.slice(0, 8)}`);
    name.onclick = event => {
      event.preventDefault();
      actions.insert(r.magic);
    };
    row.appendChild(name);
    row.appendChild(
      element('span', { class: 'nbscale-detail' }, ` ${r.experiment} · ${r.status} · ${headline(r.metrics)}`)
    );
    if (r.url) {
      row.appendChild(element('a', { href: r.url, target: '_blank', class: 'nbscale-link' }, ' MLflow'));
    }
    return row;
  });
}

export function modelsSection(models: IModelVersion[]): HTMLElement {
  return section('Models', 'models', models, m => {
    const aliases = m.aliases.map(a => `@${a}`).join(' ');
    return element(
      'li',
      { 'data-nbscale-model': `${m.name}/${m.version}` },
      `${m.name} v${m.version} ${aliases} · ${m.data}`
    );
  });
}

export function serversSection(servers: IServer[], actions: IActions): HTMLElement {
  return section('Servers', 'servers', servers, s => {
    const row = element('li', { 'data-nbscale-server': s.name });
    row.appendChild(element('span', { class: 'nbscale-health', 'data-healthy': String(s.healthy) }));
    row.appendChild(element('span', {}, ` ${s.name} ${s.healthy ? 'up' : 'down'} ${s.url}`));
    const stop = element('button', { class: 'nbscale-stop' }, 'Stop');
    stop.onclick = () => actions.stopServer(s);
    row.appendChild(stop);
    return row;
  });
}
