/**
 * nbscale's JupyterLab panel: the state of the work — datasets, jobs in any kernel, MLflow runs,
 * registered models, running model servers — in the left sidebar, refreshed every few seconds from
 * the server extension's REST API (/nbscale/api/...). The panel renders what the API says; the
 * kernels and MLflow own the state. Clicking a dataset or a run puts the magic that uses it into
 * the active notebook cell.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

const REFRESH_MS = 2000;

const ICON = new LabIcon({
  name: 'nbscale:panel',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<rect x="3" y="13" width="4" height="8"/><rect x="10" y="8" width="4" height="13"/><rect x="17" y="3" width="4" height="18"/></g></svg>'
});

async function api(path: string, method = 'GET'): Promise<any> {
  const settings = ServerConnection.makeSettings();
  const url = `${settings.baseUrl}nbscale/api/${path}`;
  const response = await ServerConnection.makeRequest(url, { method }, settings);
  const body = await response.json();
  if (!response.ok) {
    throw new Error(body.message || response.statusText);
  }
  return body.result;
}

function element(tag: string, attributes: Record<string, string> = {}, text = ''): HTMLElement {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  node.textContent = text;
  return node;
}

function metrics(values: Record<string, number>): string {
  return Object.entries(values)
    .filter(([name]) => name.includes('accuracy') || name.includes('loss'))
    .map(([name, value]) => `${name} ${value}`)
    .join(' · ');
}

class NbscalePanel extends Widget {
  private timer = 0;

  constructor(private notebooks: INotebookTracker) {
    super();
    this.id = 'nbscale-panel';
    this.addClass('nbscale-panel');
    this.title.icon = ICON;
    this.title.caption = 'nbscale';
  }

  protected onAfterAttach(): void {
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), REFRESH_MS);
  }

  protected onBeforeDetach(): void {
    window.clearInterval(this.timer);
  }

  /** Put a magic into the active notebook cell (below what is there). */
  insert(magic: string): void {
    const cell = this.notebooks.activeCell;
    if (!cell) {
      return;
    }
    const source = cell.model.sharedModel.getSource();
    cell.model.sharedModel.setSource(source ? `${source}\n${magic}` : magic);
  }

  async refresh(): Promise<void> {
    const names = ['status', 'datasets', 'jobs', 'runs?limit=10', 'models', 'servers'];
    const results = await Promise.allSettled(names.map(name => api(name)));
    const [status, datasets, jobs, runs, models, servers] = results.map(r => (r.status === 'fulfilled' ? r.value : null));
    const failed = results.find(r => r.status === 'rejected') as PromiseRejectedResult | undefined;
    const body = element('div', { class: 'nbscale-body' });
    body.appendChild(element('h2', {}, 'nbscale'));
    if (failed) {
      body.appendChild(element('div', { class: 'nbscale-error' }, String(failed.reason?.message || failed.reason)));
    }
    body.appendChild(this.section('Datasets', 'datasets', datasets || [], (d: any) => {
      const row = element('li', { 'data-nbscale-dataset': d.dataset, title: `${d.schema}\nfrom ${d.source}` });
      row.appendChild(element('a', { href: '#' }, d.dataset));
      row.appendChild(element('span', { class: 'nbscale-detail' }, ` ${d.rows} rows, ${d.columns} columns`));
      row.onclick = event => {
        event.preventDefault();
        this.insert(`%%train --data ${d.dataset} --epochs 5 -o fit`);
      };
      return row;
    }));
    body.appendChild(this.section('Jobs', 'jobs', jobs || [], (j: any) => {
      const row = element('li', { 'data-nbscale-job': `${j.kernel}/${j.id}`, 'data-state': j.state });
      row.appendChild(element('span', {}, `${j.title} — `));
      row.appendChild(element('b', { class: 'nbscale-state' }, j.state));
      row.appendChild(element('span', { class: 'nbscale-detail' }, j.progress ? ` ${j.progress}` : ''));
      if (j.state === 'running') {
        const cancel = element('button', { class: 'nbscale-cancel' }, 'Cancel');
        cancel.onclick = () => void api(`jobs/${j.kernel}/${j.id}/cancel`, 'POST').then(() => this.refresh());
        row.appendChild(cancel);
      }
      if (j.log) {
        const logs = `${ServerConnection.makeSettings().baseUrl}nbscale/api/logs?format=text&path=${encodeURIComponent(j.log)}`;
        row.appendChild(element('a', { href: logs, target: '_blank', class: 'nbscale-link' }, ' logs'));
      }
      return row;
    }));
    body.appendChild(this.section('Runs', 'runs', runs?.runs || [], (r: any) => {
      const row = element('li', { 'data-nbscale-run': r.id });
      row.appendChild(element('a', { href: '#' }, `${r.name || r.id.slice(0, 8)}`));
      row.appendChild(element('span', { class: 'nbscale-detail' }, ` ${r.experiment} · ${r.status} · ${metrics(r.metrics)}`));
      if (r.url) {
        row.appendChild(element('a', { href: r.url, target: '_blank', class: 'nbscale-link' }, ' MLflow'));
      }
      (row.firstChild as HTMLElement).onclick = event => {
        event.preventDefault();
        this.insert(r.magic);
      };
      return row;
    }));
    if (status?.mlflow_ui_command) {
      body.appendChild(element('div', { class: 'nbscale-detail' }, `MLflow UI: ${status.mlflow_ui_command}`));
    }
    body.appendChild(this.section('Models', 'models', models || [], (m: any) => {
      const aliases = m.aliases.map((a: string) => `@${a}`).join(' ');
      return element('li', { 'data-nbscale-model': `${m.name}/${m.version}` }, `${m.name} v${m.version} ${aliases} · ${m.data}`);
    }));
    body.appendChild(this.section('Servers', 'servers', servers || [], (s: any) => {
      const row = element('li', { 'data-nbscale-server': s.name });
      row.appendChild(element('span', {}, `${s.name} ${s.healthy ? '●' : '○'} ${s.url}`));
      const stop = element('button', { class: 'nbscale-stop' }, 'Stop');
      stop.onclick = () => void api(`servers/${s.kernel}/${encodeURIComponent(s.name)}/stop`, 'POST').then(() => this.refresh());
      row.appendChild(stop);
      return row;
    }));
    this.node.replaceChildren(body);
  }

  private section(title: string, key: string, items: any[], render: (item: any) => HTMLElement): HTMLElement {
    const section = element('section', { 'data-nbscale-section': key });
    section.appendChild(element('h3', {}, `${title} (${items.length})`));
    const list = element('ul');
    items.forEach(item => list.appendChild(render(item)));
    section.appendChild(list);
    return section;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbscale-labextension:panel',
  description: 'The nbscale panel: datasets, jobs, runs, models and servers.',
  autoStart: true,
  requires: [ILabShell, INotebookTracker],
  activate: (app: JupyterFrontEnd, shell: ILabShell, notebooks: INotebookTracker) => {
    const panel = new NbscalePanel(notebooks);
    shell.add(panel, 'left', { rank: 600 });
    app.commands.addCommand('nbscale:open-panel', {
      label: 'Open the nbscale panel',
      execute: () => shell.activateById(panel.id)
    });
  }
};

export default plugin;
