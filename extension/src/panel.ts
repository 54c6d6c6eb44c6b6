/**
 * The sidebar panel: it reads the state of the work from the server extension and renders it. It polls
 * only while it is visible (and the browser tab is), backs off while the server fails, and replaces only
 * the sections whose data changed.
 */
import { INotebookTracker } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { apiURL, requestAPI } from './request';
import {
  datasetsSection,
  element,
  IActions,
  jobsSection,
  modelsSection,
  runsSection,
  serversSection
} from './sections';
import { IPanelState } from './types';

export const DEFAULT_REFRESH_S = 2;
const MAX_BACKOFF_MS = 60_000;

export const ICON = new LabIcon({
  name: 'nbscale:panel',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<rect x="3" y="13" width="4" height="8"/><rect x="10" y="8" width="4" height="13"/><rect x="17" y="3" width="4" height="18"/></g></svg>'
});

const PARTS: [keyof IPanelState, string][] = [
  ['status', 'status'],
  ['datasets', 'datasets'],
  ['jobs', 'jobs'],
  ['runs', 'runs?limit=10'],
  ['models', 'models'],
  ['servers', 'servers']
];

/** Read every part of the panel's state; a part whose request failed is null, and the first failure is returned. */
export async function readState(request: typeof requestAPI = requestAPI): Promise<[IPanelState, Error | null]> {
  const results = await Promise.allSettled(PARTS.map(([, endPoint]) => request<unknown>(endPoint)));
  const state = {} as Record<keyof IPanelState, unknown>;
  PARTS.forEach(([key], i) => {
    const result = results[i];
    state[key] = result.status === 'fulfilled' ? result.value : null;
  });
  const failed = results.find(r => r.status === 'rejected') as PromiseRejectedResult | undefined;
  return [state as unknown as IPanelState, failed ? (failed.reason as Error) : null];
}

export class NbscalePanel extends Widget implements IActions {
  private poll: Poll;
  private shown = new Map<string, string>(); // section key -> the JSON it was last drawn from
  private sections = new Map<string, HTMLElement>();
  private error = element('div', { class: 'nbscale-error' });
  private footer = element('div', { class: 'nbscale-detail' });

  constructor(
    private notebooks: INotebookTracker | null,
    refreshSeconds = DEFAULT_REFRESH_S
  ) {
    super();
    this.id = 'nbscale-panel';
    this.addClass('nbscale-panel');
    this.title.icon = ICON;
    this.title.caption = 'nbscale';
    const body = element('div', { class: 'nbscale-body' });
    body.appendChild(element('h2', {}, 'nbscale'));
    body.appendChild(this.error);
    for (const key of ['datasets', 'jobs', 'runs', 'footer', 'models', 'servers']) {
      const slot = key === 'footer' ? this.footer : element('section', { 'data-nbscale-section': key });
      this.sections.set(key, slot);
      body.appendChild(slot);
    }
    this.node.appendChild(body);
    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval: refreshSeconds * 1000, backoff: true, max: MAX_BACKOFF_MS },
      // Standby (no requests) while the panel is collapsed or closed, and while the browser tab is hidden.
      standby: () => !this.isVisible || 'when-hidden',
      name: 'nbscale:panel'
    });
  }

  /** Seconds between refreshes (the panel's setting). */
  set refreshSeconds(seconds: number) {
    this.poll.frequency = { ...this.poll.frequency, interval: Math.max(0.5, seconds) * 1000 };
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.poll.refresh(); // shown again: fresh at once, not at the next tick
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  insert(magic: string): void {
    const cell = this.notebooks?.activeCell;
    if (!cell) {
      return;
    }
    const source = cell.model.sharedModel.getSource();
    cell.model.sharedModel.setSource(source ? `${source}\n${magic}` : magic);
  }

  cancelJob(job: { kernel: number; id: number }): void {
    void requestAPI(`jobs/${job.kernel}/${job.id}/cancel`, { method: 'POST' }).then(() => this.poll.refresh());
  }

  stopServer(server: { kernel: number; name: string }): void {
    void requestAPI(`servers/${server.kernel}/${encodeURIComponent(server.name)}/stop`, { method: 'POST' }).then(() =>
      this.poll.refresh()
    );
  }

  logURL(relative: string): string {
    return `${apiURL('logs')}?format=text&path=${encodeURIComponent(relative)}`;
  }

  /** One look at the server; rejects when every part failed, so the poll backs off. */
  async refresh(): Promise<void> {
    const [state, failed] = await readState();
    this.error.textContent = failed ? String(failed.message || failed) : '';
    this.draw('datasets', state.datasets, rows => datasetsSection(rows || [], this));
    this.draw('jobs', state.jobs, rows => jobsSection(rows || [], this));
    this.draw('runs', state.runs, page => runsSection(page?.runs || [], this));
    this.draw('models', state.models, rows => modelsSection(rows || []));
    this.draw('servers', state.servers, rows => serversSection(rows || [], this));
    this.footer.textContent = state.status?.mlflow_ui_command ? `MLflow UI: ${state.status.mlflow_ui_command}` : '';
    if (failed && Object.values(state).every(part => part === null)) {
      throw failed;
    }
  }

  /** Replace a section only when its data changed (a redraw would reset the user's selection and hover). */
  private draw<T>(key: string, data: T | null, render: (data: T | null) => HTMLElement): void {
    const json = JSON.stringify(data);
    if (this.shown.get(key) === json) {
      return;
    }
    this.shown.set(key, json);
    const fresh = render(data);
    this.sections.get(key)!.replaceWith(fresh);
    this.sections.set(key, fresh);
  }
}
