// The calls of docs/web-api.md, nothing else. Every state-changing call carries the
// session's CSRF token; a 401 anywhere sends the page back to the login screen.

let csrf = null;
let onUnauthorized = () => {};

export function setCsrf(token) {
  csrf = token || null;
}

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** An answer that was not 2xx: `status`, the server's `error` text, the JSON body. */
export class ApiError extends Error {
  constructor(status, body, headers) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

/**
 * One call. `body` is sent as JSON. Resolves to the parsed JSON answer (null when
 * there is none, e.g. 204), rejects with ApiError (or a TypeError when the box
 * cannot be reached).
 */
export async function call(method, path, body, { quiet401 = false } = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  const res = await fetch(path, init);
  let data = null;
  const type = res.headers.get('Content-Type') || '';
  if (res.status !== 204 && type.includes('json')) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    if (res.status === 401 && !quiet401) onUnauthorized();
    throw new ApiError(res.status, data, res.headers);
  }
  return data;
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body, opts) => call('POST', path, body === undefined ? {} : body, opts);
export const put = (path, body, opts) => call('PUT', path, body, opts);

/** Human text for a failed call. */
export function reason(err) {
  if (err instanceof ApiError) return err.message;
  return 'cannot reach the box';
}

/**
 * Uploads `file` as the raw body of a POST (the update bundle), with the CSRF token.
 * XMLHttpRequest rather than fetch: only it reports upload progress.
 * `onProgress(sentBytes, totalBytes)`. Resolves to the JSON answer, rejects with
 * ApiError.
 */
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('Accept', 'application/json');
    if (csrf) xhr.setRequestHeader('X-CSRF-Token', csrf);
    xhr.upload.onprogress = (e) => onProgress && onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new TypeError('cannot reach the box'));
    xhr.onload = () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(data);
      if (xhr.status === 401) onUnauthorized();
      reject(new ApiError(xhr.status, data, null));
    };
    xhr.send(file);
  });
}
