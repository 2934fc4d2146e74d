// Server-Sent Events over fetch, so the bearer header can be sent (EventSource cannot); a dropped or ended
// stream is resumed with Last-Event-ID after the server's `retry:` delay.

import { auth } from "./api.js";

export function followEvents(sessionId, onEvent, { lastId = 0 } = {}) {
  const controller = new AbortController();
  let retryMs = 1000;

  async function connect() {
    const headers = auth.headers({ Accept: "text/event-stream" });
    if (lastId) headers["Last-Event-ID"] = String(lastId);
    const response = await fetch(`/v1/sessions/${sessionId}/events`, { headers, signal: controller.signal });
    if (!response.ok) {
      if (response.status >= 400 && response.status < 500) controller.abort(); // retrying cannot help
      throw new Error(`event stream ${response.status}`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  function dispatch(block) {
    const event = { id: null, type: "message", data: [] };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") event.id = value;
      else if (field === "event") event.type = value;
      else if (field === "data") event.data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (event.id !== null && /^\d+$/.test(event.id)) lastId = Number(event.id);
    if (!event.data.length) return;
    let payload;
    try { payload = JSON.parse(event.data.join("\n")); } catch { return; }
    onEvent(event.type, payload);
  }

  (async () => {
    while (!controller.signal.aborted) {
      try { await connect(); } catch { if (controller.signal.aborted) return; }
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  })();

  return { close: () => controller.abort() };
}
