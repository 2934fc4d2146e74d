// The REST API under /v1 with the bearer key of this tab; images come back as object URLs.

const KEY = "studio.apiKey";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; "));
    this.status = status;
  }
}

export const auth = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY); },
  headers(extra = {}) { return { Authorization: `Bearer ${this.key}`, ...extra }; },
};

export async function request(method, path, body) {
  const init = { method, headers: auth.headers() };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(`/v1${path}`, init);
  if (response.status === 204) return null;
  const payload = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new ApiError(response.status, payload.detail ?? response.statusText);
  return payload;
}

const imageCache = new Map();

/** An object URL for an API image URL (the <img> tag cannot send the bearer header). */
export function imageUrl(url) {
  if (!url) return Promise.resolve(null);
  if (!imageCache.has(url)) {
    const loaded = fetch(url, { headers: auth.headers() }).then((r) => {
      if (!r.ok) throw new ApiError(r.status, `image ${r.status}`);
      return r.blob();
    }).then((blob) => URL.createObjectURL(blob));
    loaded.catch(() => imageCache.delete(url));
    imageCache.set(url, loaded);
  }
  return imageCache.get(url);
}

export const api = {
  listSessions: () => request("GET", "/sessions?limit=1000"),
  createSession: (body) => request("POST", "/sessions", body),
  listTurns: (sid) => request("GET", `/sessions/${sid}/turns`),
  getTurn: (sid, n) => request("GET", `/sessions/${sid}/turns/${n}`),
  postTurn: (sid, body) => request("POST", `/sessions/${sid}/turns`, body),
  cancelTurn: (sid, n) => request("POST", `/sessions/${sid}/turns/${n}/cancel`),
  branch: (sid, n) => request("POST", `/sessions/${sid}/turns/${n}/branch`),
  listSubjects: (sid) => request("GET", `/sessions/${sid}/subjects`),
  uploadReference: (sid, form) => request("POST", `/sessions/${sid}/subjects`, form),
  renameSubject: (sid, subjectId, body) => request("PATCH", `/sessions/${sid}/subjects/${subjectId}`, body),
};
