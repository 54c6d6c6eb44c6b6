/**
 * nbscale's JupyterLab panel: the state of the work — datasets, jobs in any kernel, MLflow runs,
 * registered models, running model servers — in the left sidebar, read from the server extension's
 * REST API (/nbscale/api/...). The panel renders what the API says; the kernels and MLflow own the state.
 * Clicking a dataset or a run puts the magic that uses it into the active notebook cell. It works in
 * JupyterLab 4 and Notebook 7 (any shell with a left area).
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { DEFAULT_REFRESH_S, NbscalePanel } from './panel';

const PLUGIN_ID = 'nbscale-labextension:panel';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The nbscale panel: datasets, jobs, runs, models and servers.',
  autoStart: true,
  optional: [INotebookTracker, ISettingRegistry],
  activate: (app: JupyterFrontEnd, notebooks: INotebookTracker | null, settings: ISettingRegistry | null) => {
    const panel = new NbscalePanel(notebooks, DEFAULT_REFRESH_S);
    app.shell.add(panel, 'left', { rank: 600 });
    app.commands.addCommand('nbscale:open-panel', {
      label: 'Open the nbscale panel',
      execute: () => app.shell.activateById(panel.id)
    });
    if (settings) {
      void settings.load(PLUGIN_ID).then(loaded => {
        const apply = () => {
          panel.refreshSeconds = loaded.get('refreshSeconds').composite as number;
        };
        apply();
        loaded.changed.connect(apply);
      });
    }
  }
};

export default plugin;
