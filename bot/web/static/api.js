// The service's web API as the page uses it: JSON over fetch, the participant credential in
// an Authorization header, errors as ApiError {status, code, message}. The Realtime app
// secret never reaches the page: the service makes every Realtime call for it.

export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

const REQUEST_TIMEOUT_MS = 20000;

export class Api {
  constructor(room, base = new URL("../api/", window.location.href)) {
    this.room = room;
    this.base = base;
    this.participantId = null;
    this.credential = null;
    this.credentialExpiresAt = 0; // unix seconds
  }

  adopt({ participantId, credential, credentialExpiresAt }) {
    if (participantId) this.participantId = participantId;
    this.credential = credential;
    this.credentialExpiresAt = credentialExpiresAt;
  }

  credentialValidForMs() {
    return this.credentialExpiresAt * 1000 - Date.now();
  }

  async post(path, body, { auth = true, keepalive = false } = {}) {
    const headers = { "Content-Type": "application/json" };
    if (auth) headers.Authorization = `Bearer ${this.credential}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(new URL(path, this.base), {
        method: "POST",
        headers,
        body: JSON.stringify(body ?? {}),
        cache: "no-store",
        credentials: "omit",
        keepalive,
        signal: controller.signal,
      });
    } catch (err) {
      throw new ApiError(0, "network", "Cannot reach the server.");
    } finally {
      clearTimeout(timer);
    }
    let json = null;
    try {
      json = await response.json();
    } catch {
      json = null;
    }
    if (!response.ok) {
      const error = (json && json.error) || {};
      const retry = Number(response.headers.get("Retry-After")) || null;
      throw new ApiError(response.status, error.code || `http_${response.status}`,
        error.message || response.statusText, retry);
    }
    return json || {};
  }

  join({ token, credential, name }) {
    const body = credential ? { credential, name } : { token, name };
    return this.post(`rooms/${encodeURIComponent(this.room)}/join`, body, { auth: false });
  }

  // `participantId` pins a call to the participant it was meant for; the credential is
  // bound to one participant, so a call that outlived a rejoin is refused, not misapplied.
  participant(action, body, { participantId = this.participantId, ...options } = {}) {
    return this.post(`participants/${encodeURIComponent(participantId)}/${action}`, body, options);
  }

  socketUrl() {
    const url = new URL(`participants/${encodeURIComponent(this.participantId)}/events`, this.base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }
}
