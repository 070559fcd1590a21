/*
 * Large files in parts: an S3 multipart upload, sent from the browser, resumable.
 *
 * The app starts the upload (POST /multipart) and chooses the key and the part size; each
 * part's presigned URL signs its exact length, so S3 refuses a part of any other size. Parts
 * are Blob slices, never the whole file in memory, sent a few at a time; a part that fails is
 * tried again (three tries in all). The upload is kept in localStorage under the file's name,
 * size and date, so choosing the same file again after a reload, a lost network or a closed
 * laptop asks S3 which parts it holds (POST /multipart/parts) and sends only the others.
 * The app completes the upload from S3's own list of parts (POST /multipart/complete).
 *
 * window.MultipartUpload.send(file, options) -> Promise of the registered upload
 *   options: { pageToken, signal (AbortSignal), onSending(storedBytes) as the parts start,
 *              onProgress(sentBytes, totalBytes), onStatus(text) }
 *   storedBytes and sentBytes count the parts S3 already held from an earlier visit.
 */
(function () {
  "use strict";

  const SAVED_UPLOADS = "s3-direct-upload.multipart.v1";
  const TRIES = 3;
  const RETRY_DELAY_MS = 500; // doubled after each failed try
  const URLS_PER_REQUEST = 20;

  // ---- The app's endpoints: JSON in, JSON out, {"error": "..."} on refusal --------------------

  async function callApp(path, body, pageToken) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Upload-Token": pageToken },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(answer.error || `The app answered HTTP ${response.status}.`);
      error.status = response.status;
      throw error;
    }
    return answer;
  }

  function proof(upload) {
    const { key, upload_id, size, part_size, token } = upload;
    return { key, upload_id, size, part_size, token };
  }

  // ---- Resume: what was started, by file ------------------------------------------------------

  function fileId(file) {
    return [file.name, file.size, file.lastModified].join("\n");
  }

  function savedUploads() {
    try {
      const saved = JSON.parse(localStorage.getItem(SAVED_UPLOADS) || "{}");
      return saved && typeof saved === "object" ? saved : {};
    } catch {
      return {};
    }
  }

  function remember(file, upload) {
    const saved = { ...savedUploads(), [fileId(file)]: upload };
    try {
      localStorage.setItem(SAVED_UPLOADS, JSON.stringify(saved));
    } catch {
      // Storage full or disabled: the upload goes on, it just cannot be resumed.
    }
  }

  function forget(file) {
    const saved = savedUploads();
    delete saved[fileId(file)];
    localStorage.setItem(SAVED_UPLOADS, JSON.stringify(saved));
  }

  // An upload of this file started earlier, with the parts S3 already holds; else null.
  async function resumable(file, pageToken) {
    const upload = savedUploads()[fileId(file)];
    if (!upload) {
      return null;
    }
    try {
      const { parts } = await callApp("/multipart/parts", proof(upload), pageToken);
      return { upload, stored: new Map(parts.map((part) => [part.number, part.size])) };
    } catch {
      forget(file); // finished, cancelled or expired: start again
      return null;
    }
  }

  // ---- One part: a PUT of a Blob slice to its presigned URL -----------------------------------

  function putPart(url, blob, onLoaded, signal) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      const abort = () => xhr.abort();
      signal.addEventListener("abort", abort, { once: true });
      xhr.open("PUT", url);
      xhr.upload.onprogress = (event) => onLoaded(event.loaded);
      xhr.onload = () => {
        signal.removeEventListener("abort", abort);
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve(xhr.getResponseHeader("ETag") || "");
        } else {
          const code = /<Code>([^<]*)<\/Code>/.exec(xhr.responseText || "");
          reject(new Error(`S3 refused the part (${code ? code[1] : `HTTP ${xhr.status}`}).`));
        }
      };
      xhr.onerror = () => reject(new Error("The part could not reach S3."));
      xhr.onabort = () => reject(new DOMException("Cancelled", "AbortError"));
      xhr.send(blob);
    });
  }

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new DOMException("Cancelled", "AbortError"));
      });
    });
  }

  // ---- The whole file ---------------------------------------------------------------------------

  async function send(file, options) {
    const { pageToken } = options;
    const cancelled = options.signal;
    // Stops every part in flight: on Cancel, and when one part has failed for good.
    const stop = new AbortController();
    const signal = stop.signal;
    cancelled.addEventListener("abort", () => stop.abort(), { once: true });
    const onProgress = options.onProgress || (() => {});
    const onStatus = options.onStatus || (() => {});
    const onSending = options.onSending || (() => {});
    let started = await resumable(file, pageToken);
    if (started) {
      onStatus(`Resuming: ${started.stored.size} of ${started.upload.parts} parts already in S3`);
    } else {
      const request = { filename: file.name, content_type: file.type, size: file.size };
      started = { upload: await callApp("/multipart", request, pageToken), stored: new Map() };
      remember(file, started.upload);
    }
    const { upload, stored } = started;
    const loaded = new Map(stored);
    const sum = (sizes) => [...sizes].reduce((a, b) => a + b, 0);
    const report = () => onProgress(sum(loaded.values()), file.size);
    onSending(sum(stored.values()));
    report();

    const queue = []; // the parts not started yet, in order
    for (let number = 1; number <= upload.parts; number += 1) {
      if (!stored.has(number)) {
        queue.push(number);
      }
    }

    // Presigned URLs come URLS_PER_REQUEST at a time, one request per batch: a part whose number
    // is already asked for awaits that same answer, and the next batch is asked for while about
    // `parallel` URLs are still unused, so no part waits for the app's round trip. A URL is used
    // once: a part tried again gets a fresh one, since the first may have expired meanwhile.
    const urls = new Map(); // part number -> URL not used yet
    const asked = new Map(); // part number -> the request for the batch that holds it

    function ask(numbers) {
      const request = callApp("/multipart/urls", { ...proof(upload), parts: numbers }, pageToken)
        .then(({ urls: given }) => Object.entries(given).forEach(([n, url]) => urls.set(+n, url)))
        .finally(() => numbers.forEach((n) => asked.delete(n)));
      request.catch(() => {}); // a batch asked ahead fails for the parts that await it, not here
      numbers.forEach((n) => asked.set(n, request));
    }

    const unasked = (numbers) => numbers.filter((n) => !urls.has(n) && !asked.has(n));

    async function urlFor(number) {
      if (!urls.has(number) && !asked.has(number)) {
        ask([number, ...unasked(queue)].slice(0, URLS_PER_REQUEST));
      }
      await asked.get(number);
      const url = urls.get(number);
      urls.delete(number);
      const ahead = unasked(queue).slice(0, URLS_PER_REQUEST);
      if (ahead.length && urls.size + asked.size <= upload.parallel) {
        ask(ahead);
      }
      if (!url) {
        throw new Error(`The app sent no URL for part ${number}.`);
      }
      return url;
    }

    async function sendPart(number) {
      const start = (number - 1) * upload.part_size;
      const blob = file.slice(start, Math.min(start + upload.part_size, file.size));
      for (let attempt = 1; ; attempt += 1) {
        try {
          await putPart(await urlFor(number), blob, (bytes) => {
            loaded.set(number, bytes);
            report();
          }, signal);
          loaded.set(number, blob.size);
          report();
          return;
        } catch (error) {
          loaded.set(number, 0);
          report();
          if (signal.aborted || attempt >= TRIES) {
            throw error;
          }
          onStatus(`Part ${number} failed; trying again (${attempt + 1} of ${TRIES})`);
          await sleep(RETRY_DELAY_MS * 2 ** (attempt - 1), signal);
        }
      }
    }

    async function worker() {
      while (queue.length && !signal.aborted) {
        await sendPart(queue.shift());
      }
    }
    try {
      await Promise.all(
        Array.from({ length: upload.parallel }, () =>
          worker().catch((error) => {
            stop.abort();
            throw error;
          }),
        ),
      );
      onStatus("All parts in S3; completing…");
      const { upload: record } = await callApp("/multipart/complete", proof(upload), pageToken);
      forget(file);
      return { record, keyToken: upload.key_token };
    } catch (error) {
      if (cancelled.aborted) {
        forget(file);
        await callApp("/multipart/abort", proof(upload), pageToken).catch(() => {});
      }
      throw error; // otherwise kept: choosing the file again resumes it
    }
  }

  window.MultipartUpload = { send };
})();
