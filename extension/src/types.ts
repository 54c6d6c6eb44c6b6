/**
 * What the server extension's REST API (/nbscale/api/...) answers. The jobs and servers a kernel publishes
 * mirror nbscale.contracts (PublishedJob, PublishedServer), with the kernel's pid added by the server.
 */

export interface IStatus {
  data_dir: string;
  master: string;
  tracking_uri: string;
  mlflow_ui: string | null;
  mlflow_ui_command: string | null;
}

export interface IDatasetRow {
  dataset: string; // NAME@vN
  rows: number | null;
  quarantined: number | null;
  columns: number | null;
  schema: string;
  format: string;
  source: string;
  created: number | null;
  broken?: string;
}

/** nbscale.contracts.PublishedJob, and the kernel that runs it. */
export interface IJob {
  id: number;
  kind: string;
  title: string;
  state: string;
  progress: string;
  started: number;
  ended: number | null;
  error: string | null;
  log: string | null; // the chief's log, relative to the data dir
  kernel: number;
}

export interface IRun {
  id: string;
  name: string | null;
  experiment: string | null;
  status: string;
  data: string | null;
  metrics: Record<string, number>;
  url: string | null;
  magic: string;
}

export interface IRunsPage {
  experiments: { id: string; name: string }[];
  runs: IRun[];
}

export interface IModelVersion {
  name: string;
  version: number;
  aliases: string[];
  run: string;
  data: string;
  metrics: Record<string, number>;
}

/** nbscale.contracts.PublishedVersion */
export interface IServedVersion {
  label: string; // "digits v3"
  weight: number;
  replicas: number;
}

/** nbscale.contracts.PublishedServer, and the kernel that runs it. */
export interface IServer {
  name: string;
  url: string;
  healthy: boolean;
  versions: IServedVersion[];
  kernel: number;
}

/** What one refresh of the panel reads: each part null when its request failed. */
export interface IPanelState {
  status: IStatus | null;
  datasets: IDatasetRow[] | null;
  jobs: IJob[] | null;
  runs: IRunsPage | null;
  models: IModelVersion[] | null;
  servers: IServer[] | null;
}
