import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The base path of nbscale's REST API on the Jupyter server. */
export const API_NAMESPACE = 'nbscale/api';

/**
 * Call the server extension: `endPoint` under /nbscale/api, with the server's authentication (token or
 * XSRF cookie, as every JupyterLab request). The answer's `result`, typed; a failed call throws an Error
 * with the server's one-line message.
 */
export async function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let body: { result?: T; message?: string } = {};
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      throw new ServerConnection.ResponseError(response, `nbscale: ${url} answered ${response.status} with no JSON`);
    }
  }
  if (!response.ok) {
    throw new ServerConnection.ResponseError(response, body.message || response.statusText);
  }
  return body.result as T;
}

/** A URL under the API for the browser to open itself (a log in a new tab). */
export function apiURL(
  endPoint: string,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): string {
  return URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);
}
