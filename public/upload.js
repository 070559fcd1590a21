/*
 * The upload page: browser-to-S3 uploads with blueimp jQuery File Upload.
 *
 * For each file: check it against the limits the server embedded in the page, ask the app to
 * sign an S3 POST policy or presigned PUT (GET /s3_credentials), send the file straight to S3
 * (POST: the signed fields, then the file; PUT: the file as the body, with the signed headers),
 * read S3's answer, and report the upload to the app (POST /uploads). S3's errors are explained
 * by s3-errors.js.
 * Data from the network reaches the page through textContent only, never as HTML.
 */
(function ($) {
  "use strict";

  const config = JSON.parse(document.getElementById("upload-config").textContent);
  const limits = config.limits;
  // A silent network must not leave a row "Uploading…" forever. The app answers within its own
  // S3 timeout; S3 gets this long without a byte of progress, or without an answer after the
  // last byte, before the request is abandoned.
  const APP_TIMEOUT_SECONDS = 30;
  const S3_STALL_SECONDS = 30;

  // ---- Checks done before anything is sent --------------------------------------------------

  // The server's human_size: binary multiples, so "10 MB" means the same here and there.
  function formatBytes(bytes) {
    const units = [
      ["GB", 1024 ** 3],
      ["MB", 1024 ** 2],
      ["KB", 1024],
    ];
    for (const [unit, factor] of units) {
      if (bytes >= factor) {
        return `${(bytes / factor).toFixed(1).replace(/\.0$/, "")} ${unit}`;
      }
    }
    return bytes === 1 ? "1 byte" : `${bytes} bytes`;
  }

  // An allowed type is either exact ("application/pdf") or a family ("image/*").
  function typeAllowed(type) {
    return limits.allowed_types.some((allowed) =>
      allowed.endsWith("/*") ? type.startsWith(allowed.slice(0, -1)) : type === allowed,
    );
  }

  // The same limits the server signs into the policy; refusing here saves a doomed upload.
  function problemWith(file) {
    if (file.size > limits.max_bytes) {
      return `This file is larger than the ${limits.max_human} limit.`;
    }
    if (file.size === 0) {
      return "This file is empty; there is nothing to upload.";
    }
    if (!typeAllowed(file.type)) {
      return `This kind of file is not accepted here: only ${limits.allowed_names}.`;
    }
    return null;
  }

  // file_types.type_name: "PNG image" for image/png, "image" for another image, else the type.
  function typeName(type) {
    const family = `${type.split("/")[0]}/*`;
    return limits.type_names[type] || limits.type_names[family] || type;
  }

  // name, size and lastModified: the same file chosen twice, as Uppy recognises it.
  function fileIdentity(file) {
    return JSON.stringify([file.name, file.size, file.lastModified]);
  }

  // ---- Talking to the app -------------------------------------------------------------------

  // The app answers errors as {"error": "one sentence"}; surface that sentence.
  async function callApp(url, options = {}) {
    const headers = { "X-Upload-Token": config.pageToken, ...options.headers };
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), APP_TIMEOUT_SECONDS * 1000);
    const { signal } = timeout;
    let response;
    try {
      response = await fetch(url, { ...options, headers, credentials: "same-origin", signal });
    } catch {
      throw appError(
        signal.aborted
          ? `The app did not answer within ${APP_TIMEOUT_SECONDS} s; try again.`
          : "The app could not be reached. Is the server still running?",
        0,
      );
    } finally {
      clearTimeout(timer);
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = body.error || `The app answered HTTP ${response.status}.`;
      throw appError(message, response.status, Number(response.headers.get("Retry-After")));
    }
    return body;
  }

  // status 0 means no answer at all; retryAfter is the app's Retry-After, in seconds.
  function appError(message, status, retryAfter = 0) {
    return Object.assign(new Error(message), { status, retryAfter: retryAfter || 0 });
  }

  function requestPolicy(file) {
    const query = new URLSearchParams({
      filename: file.name,
      content_type: file.type,
      size: String(file.size),
    });
    return callApp(`/s3_credentials?${query}`);
  }

  function registerUpload(report) {
    return callApp("/uploads", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key: report.key, etag: report.etag, token: report.token }),
    });
  }

  // ---- Reading S3's answers -----------------------------------------------------------------

  function xmlText(documentNode, tag) {
    const element = documentNode && documentNode.getElementsByTagName(tag)[0];
    return element ? element.textContent : "";
  }

  function parseXml(text) {
    if (!text) {
      return null;
    }
    const documentNode = new DOMParser().parseFromString(text, "application/xml");
    return documentNode.getElementsByTagName("parsererror").length ? null : documentNode;
  }

  // success_action_status 201 returns a PostResponse document; S3-compatible servers answering
  // 200/204 send no body, nor does a PUT: the ETag comes from the header (which the bucket's
  // CORS rule must expose) and the key from our own signing answer.
  function parsePostResponse(xhr, credentials) {
    const answer = parseXml(xhr.responseText);
    return {
      location: xmlText(answer, "Location"),
      bucket: xmlText(answer, "Bucket"),
      key: xmlText(answer, "Key") || credentials.key,
      etag: xmlText(answer, "ETag") || xhr.getResponseHeader("ETag") || "",
    };
  }

  // x-amz-bucket-region names a bucket's region when the CORS rule exposes it; read from the
  // exposed headers, since asking for a hidden one logs an error in the console.
  function parseS3Error(xhr) {
    const region = /^x-amz-bucket-region: *(.*?)\r?$/im.exec(xhr.getAllResponseHeaders());
    return S3Errors.fromXml(xhr.responseText, xhr.status, region ? region[1] : "");
  }

  // What the app signed, to compare with what S3 signed: for a POST the base64 policy is the
  // string to sign; for a PUT the app returns its canonical request and string to sign.
  function signedByUs(credentials) {
    return {
      stringToSign: credentials.fields ? credentials.fields.policy : credentials.string_to_sign,
      canonicalRequest: credentials.canonical_request,
    };
  }

  // The one place an S3 error becomes text: S3Errors' table, with what this upload signed.
  function explainS3Error(error, credentials) {
    const context = { method: credentials.method, maxHuman: limits.max_human };
    return S3Errors.explain(error, { ...context, ours: signedByUs(credentials) });
  }

  // ---- The protocol panel -------------------------------------------------------------------

  // Long values stay recognisable without filling the screen: "3f9a…c21b".
  function shorten(value, keep = 4) {
    return value.length > 2 * keep + 1 ? `${value.slice(0, keep)}…${value.slice(-keep)}` : value;
  }

  // One condition per line, as the policy is usually written in the AWS docs.
  function formatPolicy(policy) {
    if (!Array.isArray(policy.conditions)) {
      return JSON.stringify(policy, null, 2);
    }
    const conditions = policy.conditions.map(
      (condition) => `    ${JSON.stringify(condition, null, 1).replace(/\n\s*/g, " ")}`,
    );
    return [
      "{",
      `  "expiration": ${JSON.stringify(policy.expiration)},`,
      '  "conditions": [',
      conditions.join(",\n"),
      "  ]",
      "}",
    ].join("\n");
  }

  function decodePolicy(policyBase64) {
    try {
      const bytes = Uint8Array.from(atob(policyBase64), (char) => char.charCodeAt(0));
      return formatPolicy(JSON.parse(new TextDecoder().decode(bytes)));
    } catch {
      return "(the policy field is not base64-encoded JSON)";
    }
  }

  function tableRow(name, value) {
    const row = document.createElement("tr");
    const nameCell = document.createElement("th");
    const valueCell = document.createElement("td");
    nameCell.scope = "row";
    nameCell.textContent = name;
    valueCell.textContent = value;
    row.append(nameCell, valueCell);
    return row;
  }

  function displayedValue(name, value) {
    if (name === "x-amz-signature" || name === "x-amz-security-token") {
      return shorten(value);
    }
    return name === "policy" ? `${shorten(value, 12)} (decoded below)` : value;
  }

  // The panel shows one exchange whole: the form (or a PUT's headers) a row sent and the answer
  // S3 gave it.
  function showProtocol(credentials, file, xhr) {
    const put = credentials.method === "PUT";
    document.getElementById("protocol-empty").hidden = true;
    document.getElementById("protocol-body").hidden = false;
    document.getElementById("protocol-method").textContent = put
      ? "Signed headers, PUT"
      : "Form fields, in order, POST";
    document.getElementById("protocol-url").textContent = credentials.url;
    const rows = Object.entries(put ? credentials.headers : credentials.fields).map(
      ([name, value]) => tableRow(name, displayedValue(name, value)),
    );
    const where = put ? "the body" : "always last";
    rows.push(tableRow("file", `${file.name} (${formatBytes(file.size)}, ${where})`));
    document.getElementById("protocol-fields").replaceChildren(...rows);
    document.getElementById("protocol-signed").textContent = put
      ? "The canonical request and string to sign"
      : "The policy, decoded from base64";
    const signed = put
      ? `${credentials.canonical_request}\n\n${credentials.string_to_sign}`
      : decodePolicy(credentials.fields.policy);
    document.getElementById("protocol-policy").textContent = signed;
    document.getElementById("protocol-compare").hidden = true;
    document.getElementById("protocol-status").textContent = xhr.status
      ? `HTTP ${xhr.status} ${xhr.statusText}`
      : `no answer from ${config.s3Origin}: a network error, or its CORS rule refused this page`;
    document.getElementById("protocol-response").textContent = xhr.responseText || "(empty body)";
  }

  // For SignatureDoesNotMatch: the text S3 signed under ours, each cut at the first difference.
  function showSignatureComparison(error, credentials) {
    const ours = signedByUs(credentials);
    const texts = error.code === "SignatureDoesNotMatch" && S3Errors.signedTexts(error, ours);
    if (!texts) {
      return;
    }
    const difference = S3Errors.difference(texts.ours, texts.theirs);
    document.getElementById("protocol-compare-name").textContent = texts.name;
    document.getElementById("protocol-compare-verdict").textContent = difference
      ? `They differ from character ${difference.start + 1} (highlighted).`
      : "They are identical: the text is right, so the key that signed it is not S3's.";
    const oursShown = document.getElementById("protocol-ours");
    const theirsShown = document.getElementById("protocol-theirs");
    if (difference) {
      markDifference(oursShown, texts.ours, difference.start, difference.oursEnd);
      markDifference(theirsShown, texts.theirs, difference.start, difference.theirsEnd);
    } else {
      oursShown.textContent = texts.ours;
      theirsShown.textContent = texts.theirs;
    }
    document.getElementById("protocol-compare").hidden = false;
  }

  // A missing part (one text is the other plus something) is marked as a gap.
  function markDifference(pre, text, start, end) {
    const [before, differing, after] = S3Errors.cut(text, start, end);
    pre.replaceChildren(before, element("mark", "difference", differing || "⟂"), after);
  }

  // ---- The uploaded files list --------------------------------------------------------------

  // The list shows a page at a time, so that fifty uploads do not make a phone scroll for ever.
  const LIST_PAGE = 12;
  let listShown = LIST_PAGE;
  // The records this page got back from POST /uploads, newest last.
  const registered = [];

  function uploadItem(upload) {
    const item = document.createElement("li");
    if (upload.error) {
      item.className = "upload upload-broken";
      item.textContent = upload.error;
      return item;
    }
    const link = document.createElement("a");
    const name = document.createElement("span");
    const meta = document.createElement("span");
    item.className = "upload";
    link.className = "upload-link";
    link.href = upload.url;
    name.className = "upload-name";
    name.textContent = upload.filename;
    meta.className = "upload-meta";
    meta.textContent = `${formatBytes(upload.size)} · ${typeName(upload.content_type)}`;
    link.append(thumbnail(upload), name);
    item.append(link, meta);
    return item;
  }

  function thumbnail(upload) {
    if (upload.content_type.startsWith("image/")) {
      const image = document.createElement("img");
      image.className = "thumb";
      image.src = upload.url;
      image.alt = "";
      return image;
    }
    return fileBadge(upload);
  }

  function fileBadge(upload) {
    const badge = document.createElement("span");
    badge.className = "thumb thumb-file";
    badge.setAttribute("aria-hidden", "true");
    badge.textContent = badgeText(upload);
    return badge;
  }

  // The template's badge macro: the extension, else the MIME subtype ("PDF").
  function badgeText(upload) {
    const extension = upload.filename.includes(".") ? upload.filename.split(".").pop() : "";
    return (extension || upload.content_type.split("/").pop()).slice(0, 4).toUpperCase();
  }

  // Behind a login (config.listAll) the list is every upload; otherwise it is what this browser
  // uploaded, kept in localStorage with each key's token, which renews the links (they expire).
  const OWN_UPLOADS = "s3-direct-upload.own-uploads.v1";
  const OWN_UPLOADS_KEPT = 50;

  function ownUploads() {
    try {
      const kept = JSON.parse(localStorage.getItem(OWN_UPLOADS) || "[]");
      const complete = (entry) => entry && entry.upload && entry.token;
      return Array.isArray(kept) ? kept.filter(complete) : [];
    } catch {
      return [];
    }
  }

  function rememberUpload(upload, token) {
    const others = ownUploads().filter((entry) => entry.upload.key !== upload.key);
    const kept = [{ upload, token }, ...others].slice(0, OWN_UPLOADS_KEPT);
    try {
      localStorage.setItem(OWN_UPLOADS, JSON.stringify(kept));
    } catch {
      // Storage full or disabled: the list still shows this upload until the page is left.
    }
  }

  async function ownUploadsWithLinks() {
    const own = ownUploads();
    if (!own.length) {
      return [];
    }
    const proofs = own.map(({ upload, token }) => ({ key: upload.key, token }));
    const { links } = await callApp("/uploads/links", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ uploads: proofs }),
    });
    return own
      .filter(({ upload }) => links[upload.key])
      .map(({ upload }) => ({ ...upload, url: links[upload.key] }));
  }

  // The whole list from an array of upload records, newest first, one page shown.
  function renderUploads(uploads) {
    document.getElementById("uploads").replaceChildren(...uploads.map(uploadItem));
    document.getElementById("uploads-empty").hidden = uploads.length > 0;
    paginateUploads();
  }

  function paginateUploads() {
    const items = [...document.querySelectorAll("#uploads .upload")];
    items.forEach((item, index) => {
      item.hidden = index >= listShown;
    });
    const more = document.getElementById("uploads-more");
    const hidden = Math.max(0, items.length - listShown);
    more.hidden = hidden === 0;
    more.textContent = `Show ${Math.min(hidden, LIST_PAGE)} more (${items.length} in all)`;
  }

  function showMoreUploads() {
    const first = listShown;
    listShown += LIST_PAGE;
    paginateUploads();
    const next = document.querySelectorAll("#uploads .upload-link")[first];
    if (next) {
      next.focus();
    }
  }

  let listRequests = 0; // a slow answer must not overwrite a newer one

  async function refreshUploads() {
    const request = (listRequests += 1);
    const uploads = config.listAll
      ? (await callApp("/uploads")).uploads
      : await ownUploadsWithLinks();
    if (request === listRequests) {
      renderUploads(uploads);
    }
  }

  // ---- Pending registrations: stored in S3, not yet recorded by the app ---------------------

  // Kept in localStorage until the app records them, so a reload or a crash orphans nothing.
  const PENDING_KEY = "s3-upload.pending-registrations";
  const REGISTER_DELAYS = [1, 2, 4, 8, 16, 30];
  const LATER = "It is tried again when you press Retry or reload this page.";

  function loadPending() {
    try {
      const pending = JSON.parse(localStorage.getItem(PENDING_KEY) || "[]");
      return Array.isArray(pending) ? pending : [];
    } catch {
      return [];
    }
  }

  function savePending(pending) {
    try {
      localStorage.setItem(PENDING_KEY, JSON.stringify(pending));
    } catch {
      // Storage full or refused (private mode): the retries on this page still run.
    }
  }

  function keepPending(report) {
    savePending([...loadPending().filter((other) => other.key !== report.key), report]);
  }

  function dropPending(report) {
    savePending(loadPending().filter((other) => other.key !== report.key));
  }

  // No answer, the app's own trouble (5xx) or its rate limit are worth another try; a refusal
  // (the key is not ours, the ETag differs) is final.
  function worthRetrying(error) {
    return error.status === 0 || error.status === 429 || error.status >= 500;
  }

  async function register(row) {
    const report = row.report;
    keepPending(report);
    for (let attempt = 0; ; attempt += 1) {
      setStatus(row, "Stored in S3; recording it…", "recording");
      try {
        const { upload } = await registerUpload(report);
        dropPending(report);
        rememberUpload(upload, report.token);
        registered.push(upload);
        return upload;
      } catch (error) {
        if (!worthRetrying(error)) {
          dropPending(report);
          throw error;
        }
        if (attempt >= REGISTER_DELAYS.length) {
          throw appError(`Stored in S3, but not recorded yet: ${error.message} ${LATER}`, 0);
        }
        const delay = Math.max(REGISTER_DELAYS[attempt], error.retryAfter);
        const said = `Stored in S3, but not recorded yet: ${error.message}`;
        await countdown(row, delay, (left) => `${said} Trying again in ${left} s…`);
      }
    }
  }

  async function finishRegistration(row) {
    let upload;
    try {
      upload = await register(row);
    } catch (error) {
      showFailure(row, "", error.message);
      return;
    }
    await refreshUploads().catch((error) => console.warn("Could not refresh the list:", error));
    showDone(row, upload);
  }

  // ---- One row per file ---------------------------------------------------------------------

  function createRow(file) {
    const item = document.createElement("li");
    item.className = "file";
    const name = element("span", "file-name", file.name);
    const size = element("span", "file-size", formatBytes(file.size));
    const progress = document.createElement("progress");
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute("aria-label", `Upload progress of ${file.name}`);
    const stats = element("p", "file-stats", "");
    stats.hidden = true;
    const status = element("p", "file-status", "Waiting…");
    status.tabIndex = -1;
    const actions = element("span", "file-actions", "");
    const row = { element: item, file, name, progress, stats, status, cancelled: false };
    Object.assign(row, { loaded: 0, storedBefore: 0, sendingSince: 0 });
    row.buttons = {
      start: button("Start", file.name, () => start(row)),
      cancel: button("Cancel", file.name, () => cancel(row)),
      retry: button("Retry", file.name, () => retry(row)),
      remove: button("Remove", file.name, () => remove(row)),
    };
    actions.append(...Object.values(row.buttons));
    item.append(preview(row), name, size, actions, progress, stats, status);
    document.getElementById("queue").append(item);
    return row;
  }

  function button(text, filename, onClick) {
    const node = element("button", "button button-small", text);
    node.type = "button";
    node.hidden = true;
    node.setAttribute("aria-label", `${text} ${filename}`);
    node.addEventListener("click", onClick);
    return node;
  }

  // A thumbnail of an image before it is sent, from an object URL released with the row.
  function preview(row) {
    const { file } = row;
    if (!(file instanceof Blob) || !file.type.startsWith("image/")) {
      return fileBadge({ filename: file.name, content_type: file.type || "" });
    }
    const image = document.createElement("img");
    image.className = "thumb";
    image.alt = "";
    row.previewUrl = URL.createObjectURL(file);
    image.src = row.previewUrl;
    return image;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    node.textContent = text;
    return node;
  }

  // Which buttons each state offers; a state not listed offers none.
  const BUTTONS = {
    ready: ["start", "remove"],
    working: ["cancel"],
    waiting: ["cancel"],
    recording: [],
    error: ["retry", "remove"],
    cancelled: ["retry", "remove"],
    refused: ["remove"],
  };

  function setStatus(row, text, state) {
    const hadFocus = row.element.contains(document.activeElement);
    row.status.textContent = text;
    row.state = state;
    row.element.dataset.state = state;
    const shown = BUTTONS[state] || [];
    for (const [name, node] of Object.entries(row.buttons)) {
      node.hidden = !shown.includes(name);
    }
    row.progress.hidden = !["working", "waiting", "recording", "done"].includes(state);
    if (state !== "working") {
      row.sendingSince = 0;
    }
    row.stats.hidden = !row.sendingSince;
    if (hadFocus && !row.element.contains(document.activeElement)) {
      focusWithin(row);
    }
    updateOverall();
  }

  function showFailure(row, code, sentence, state = "error") {
    row.loaded = 0;
    setStatus(row, "", state);
    if (code) {
      row.status.append(element("code", "error-code", code), " ");
    }
    row.status.append(sentence);
  }

  // Finished rows leave the queue: the file is now in the list of uploaded files.
  function showDone(row, upload) {
    row.loaded = row.file.size;
    row.upload = upload;
    setStatus(row, "Uploaded", "done");
    forget(row, document.getElementById("uploads-heading"));
  }

  // The row's speed counts from now, and only bytes sent from now: a resumed upload's parts
  // already in S3 count in its progress, not in its speed (else the first second would claim
  // gigabytes a second).
  function startSending(row, storedBefore = 0) {
    Object.assign(row, { loaded: storedBefore, storedBefore, sendingSince: performance.now() });
    row.stats.hidden = false;
    showRowPace(row);
  }

  function sentNow(row) {
    return Math.max(0, row.loaded - row.storedBefore);
  }

  // "412 MB of 1 GB · 85.3 MB/s · 9 s left": a plain line, not a live region (the page has one).
  function showRowPace(row) {
    if (!row.sendingSince) {
      return;
    }
    const { size } = row.file;
    const { speed, eta } = pace(sentNow(row), row.sendingSince, size - row.loaded);
    const figure = (text) => element("span", "", text); // wraps between figures only
    const done = figure(`${formatBytes(row.loaded)} of ${formatBytes(size)}`);
    row.stats.replaceChildren(done, " · ", figure(speed), " · ", figure(eta));
  }

  // ---- What each button does ----------------------------------------------------------------

  function start(row) {
    setStatus(row, "Waiting…", "working");
    startUpload(row.data, row, false);
  }

  function cancel(row) {
    row.cancelled = true;
    if (row.stopWait) {
      row.stopWait();
    }
    if (row.abort) {
      row.abort();
    }
    showCancelled(row);
  }

  function showCancelled(row) {
    row.loaded = 0;
    setStatus(row, "Cancelled", "cancelled");
  }

  function retry(row) {
    row.cancelled = false;
    joinBatch([row]);
    setStatus(row, "Waiting…", "working");
    if (row.report) {
      finishRegistration(row);
    } else {
      startUpload(row.data, row, false);
    }
  }

  // When a row's state hides the button that had focus (Cancel, Retry, Start), focus moves to
  // the row's first visible button, else its status: never lost to <body>.
  function focusWithin(row) {
    const visible = Object.values(row.buttons).find((node) => !node.hidden);
    (visible || row.status).focus();
  }

  // Removing a file stored in S3 but not recorded also stops it being sent again at a reload.
  function remove(row) {
    batch.rows = batch.rows.filter((other) => other !== row);
    chosen.delete(row.identity);
    if (row.report) {
      dropPending(row.report);
    }
    forget(row, document.getElementById("file-input"));
  }

  // Takes the row off the queue; focus inside it goes to the next row, else to `fallback`.
  function forget(row, fallback) {
    const hadFocus = row.element.contains(document.activeElement);
    const next = row.element.nextElementSibling || row.element.previousElementSibling;
    if (row.previewUrl) {
      URL.revokeObjectURL(row.previewUrl);
    }
    row.element.remove();
    if (hadFocus) {
      const target = next && [...next.querySelectorAll("button")].find((node) => !node.hidden);
      (target || fallback).focus();
    }
    updateOverall();
  }

  // ---- The upload flow ----------------------------------------------------------------------

  async function startUpload(data, row, retried) {
    const file = data.files[0];
    row.abort = null;
    if (file.size > limits.multipart_threshold) {
      sendInParts(row, file);
      return;
    }
    setStatus(row, "Signing…", "working");
    const credentials = await signedForm(row, file);
    if (!credentials || row.cancelled) {
      return;
    }
    if (!useCredentials(data, credentials, file)) {
      showFailure(row, "", "The app signed another size than this file's; reload and try again.");
      return;
    }
    setStatus(row, "Uploading…", "working");
    startSending(row);
    const jqXHR = data.submit();
    row.abort = () => jqXHR.abort();
    row.stalled = false;
    row.watchdog = stallWatchdog(() => {
      row.stalled = true;
      jqXHR.abort();
    });
    jqXHR
      .always(() => row.watchdog.stop())
      .done((_body, _status, xhr) => finishUpload(row, credentials, file, xhr))
      .fail((xhr, textStatus) => {
        handleFailure(data, row, retried, { credentials, file, xhr, textStatus });
      });
  }

  // A file over UPLOAD_MULTIPART_THRESHOLD goes in parts (public/multipart.js): each part's
  // length signed, resumable after a reload; the server completes and records the upload.
  async function sendInParts(row, file) {
    const stop = new AbortController();
    row.abort = () => stop.abort();
    setStatus(row, "Uploading in parts…", "working");
    const onProgress = (sent, total) => {
      row.loaded = sent;
      row.progress.value = Math.floor((sent / total) * 100);
      showRowPace(row);
      updateOverall();
    };
    try {
      const { record, keyToken } = await window.MultipartUpload.send(file, {
        pageToken: config.pageToken,
        signal: stop.signal,
        onSending: (storedBytes) => startSending(row, storedBytes),
        onProgress,
        onStatus: (text) => setStatus(row, text, "working"),
      });
      rememberUpload(record, keyToken);
      registered.push(record);
      await refreshUploads().catch((error) => console.warn("Could not refresh the list:", error));
      showDone(row, record);
    } catch (error) {
      if (!row.cancelled) {
        showFailure(row, "", error.message);
      }
    }
  }

  // How the file goes to S3. POST: multipart/form-data, the signed fields and then the file.
  // PUT: the file as the body, with exactly the signed headers; the browser sets Content-Length
  // from the file, so the signed length must be the file's size (else S3 refuses the signature).
  function useCredentials(data, credentials, file) {
    data.url = credentials.url;
    if (credentials.method === "PUT") {
      const { "Content-Length": length, ...headers } = credentials.headers;
      Object.assign(data, { type: "PUT", multipart: false, formData: [], s3Headers: headers });
      return Number(length) === file.size;
    }
    const formData = Object.entries(credentials.fields).map(([name, value]) => ({ name, value }));
    Object.assign(data, { type: "POST", multipart: true, formData, s3Headers: null });
    return true;
  }

  // blueimp's last look at a request before it is sent: a PUT carries the signed headers and
  // nothing else (blueimp would add an unsigned Content-Disposition, which S3 would store).
  function onSend(_event, options) {
    if (options.s3Headers) {
      options.headers = { ...options.s3Headers };
      options.contentType = options.s3Headers["Content-Type"];
    }
  }

  // The app's signed form; its rate limit is a wait, counted down on the row, never a failure.
  async function signedForm(row, file) {
    for (;;) {
      try {
        return await requestPolicy(file);
      } catch (error) {
        if (row.cancelled) {
          return null;
        }
        if (error.status !== 429) {
          showFailure(row, "", error.message);
          return null;
        }
        setStatus(row, "", "waiting");
        const said = "Waiting: the server takes only so many files a minute.";
        const waited = await countdown(row, error.retryAfter || 5, (s) => `${said} Going on in ${s} s…`);
        if (!waited) {
          return null;
        }
        setStatus(row, "Signing…", "working");
      }
    }
  }

  // Waits `seconds`, saying each second what comes next; false when cancelled meanwhile.
  function countdown(row, seconds, say) {
    return new Promise((resolve) => {
      let left = Math.max(1, Math.ceil(seconds));
      const tick = () => {
        if (left === 0) {
          row.stopWait = null;
          resolve(true);
          return;
        }
        row.status.textContent = say(left);
        left -= 1;
        row.waitTimer = setTimeout(tick, 1000);
      };
      row.stopWait = () => {
        clearTimeout(row.waitTimer);
        row.stopWait = null;
        resolve(false);
      };
      tick();
    });
  }

  // Calls onStall once S3_STALL_SECONDS pass without a poke; each progress event pokes it.
  function stallWatchdog(onStall) {
    let timer = 0;
    const poke = () => {
      clearTimeout(timer);
      timer = setTimeout(onStall, S3_STALL_SECONDS * 1000);
    };
    poke();
    return { poke, stop: () => clearTimeout(timer) };
  }

  function finishUpload(row, credentials, file, xhr) {
    showProtocol(credentials, file, xhr);
    const stored = parsePostResponse(xhr, credentials);
    row.loaded = file.size;
    row.report = {
      key: stored.key,
      etag: stored.etag,
      token: credentials.token,
      filename: file.name,
      size: file.size,
    };
    finishRegistration(row);
  }

  function handleFailure(data, row, retried, { credentials, file, xhr, textStatus }) {
    if (textStatus === "abort" && row.stalled) {
      const silence = `nothing for ${S3_STALL_SECONDS} s`;
      showFailure(row, "", `S3 at ${config.s3Origin} stopped answering (${silence}); try again.`);
      return;
    }
    if (textStatus === "abort") {
      showCancelled(row);
      return;
    }
    showProtocol(credentials, file, xhr);
    if (xhr.status === 0) {
      const detail = "the Protocol panel below has the details";
      showFailure(row, "", `The file could not reach the storage server; try again (${detail}).`);
      return;
    }
    const error = parseS3Error(xhr);
    if (S3Errors.isExpired(error) && !retried) {
      setStatus(row, "The policy expired; retrying with a fresh one…", "working");
      startUpload(data, row, true);
      return;
    }
    showSignatureComparison(error, credentials);
    showFailure(row, error.code, explainS3Error(error, credentials));
  }

  // ---- The batch: overall progress and what happened ----------------------------------------

  // The rows of the current batch, counted until every one has finished one way or another.
  const batch = { rows: [], startedAt: 0, announced: true };
  const ACTIVE = ["working", "waiting", "recording"];

  function joinBatch(rows) {
    if (!batch.rows.some((row) => ACTIVE.includes(row.state))) {
      const left = batch.rows.filter((row) => row.state !== "done" && row.element.isConnected);
      batch.rows = left.filter((row) => !rows.includes(row));
      batch.startedAt = performance.now();
    }
    batch.rows.push(...rows);
    batch.announced = false;
  }

  function counts(rows) {
    const count = (state) => rows.filter((row) => row.state === state).length;
    return {
      total: rows.length,
      done: count("done"),
      failed: count("error"),
      cancelled: count("cancelled"),
      refused: count("refused"),
      ready: count("ready"),
      waiting: count("waiting"),
      active: rows.filter((row) => ACTIVE.includes(row.state)).length,
    };
  }

  // "2 of 3 uploaded, 1 failed": what happened, never "all sent" when something was not.
  function summary(tally) {
    const parts = [`${tally.done} of ${tally.total} uploaded`];
    const others = [
      [tally.failed, "failed"],
      [tally.cancelled, "cancelled"],
      [tally.refused, "not accepted"],
      [tally.waiting, "waiting"],
      [tally.ready, "ready to start"],
    ];
    for (const [number, word] of others) {
      if (number) {
        parts.push(`${number} ${word}`);
      }
    }
    return parts.join(", ");
  }

  function formatDuration(seconds) {
    if (!Number.isFinite(seconds)) {
      return "time left: calculating";
    }
    const rounded = Math.ceil(seconds);
    if (rounded < 60) {
      return `${rounded} s left`;
    }
    return `${Math.floor(rounded / 60)} min ${rounded % 60} s left`;
  }

  // Bytes of the files that can still arrive; a failed file counts as nothing sent.
  function updateOverall() {
    const rows = batch.rows;
    const tally = counts(rows);
    document.getElementById("overall").hidden = rows.length === 0;
    document.getElementById("start-all").hidden = !tally.ready;
    const sendable = rows.filter((row) => row.state !== "refused");
    const total = sendable.reduce((sum, row) => sum + row.file.size, 0);
    const loaded = sendable.reduce((sum, row) => sum + row.loaded, 0);
    const percent = total ? Math.floor((loaded / total) * 100) : 0;
    document.getElementById("overall-progress").value = percent;
    document.getElementById("overall-percent").textContent = `${percent}%`;
    document.getElementById("overall-label").textContent = summary(tally);
    showSpeed(rows, tally.active > 0);
    if (!tally.active && !tally.ready && rows.length && !batch.announced) {
      batch.announced = true;
      announceBatch(tally);
    }
  }

  // Average speed and time left from `sent` bytes since `since`: steadier than an instant
  // rate, honest for a guess. The batch and each row use it.
  function pace(sent, since, left) {
    const seconds = (performance.now() - since) / 1000;
    const bytesPerSecond = seconds > 0 ? sent / seconds : 0;
    return {
      speed: `${(bytesPerSecond / 1024 ** 2).toFixed(1)} MB/s`,
      eta: formatDuration(bytesPerSecond ? left / bytesPerSecond : Number.NaN),
    };
  }

  function showSpeed(rows, running) {
    document.getElementById("overall-stats").hidden = !running;
    const sent = rows.reduce((sum, row) => sum + sentNow(row), 0);
    const left = rows
      .filter((row) => ACTIVE.includes(row.state))
      .reduce((sum, row) => sum + row.file.size - row.loaded, 0);
    const { speed, eta } = pace(sent, batch.startedAt, left);
    document.getElementById("overall-speed").textContent = speed;
    document.getElementById("overall-eta").textContent = eta;
  }

  // ---- Announcements: one polite live region for the whole page -----------------------------

  // What is said within one moment is said together, once.
  const said = [];

  function announce(text) {
    const region = document.getElementById("announcer");
    if (!said.length) {
      region.textContent = "";
      setTimeout(() => {
        region.textContent = said.splice(0).join(" ");
      }, 100);
    }
    said.push(text);
  }

  function announceBatch(tally) {
    const listed = document.querySelectorAll("#uploads .upload").length;
    const list = `The list of uploaded files has ${listed} file${listed === 1 ? "" : "s"}.`;
    announce(`${summary(tally)}. ${tally.done ? list : ""}`.trim());
  }

  // ---- Wiring -------------------------------------------------------------------------------

  // Every file chosen and not yet removed, by identity: the same file is not taken twice.
  const chosen = new Set();

  function onAdd(_event, data) {
    const file = data.files[0];
    const identity = fileIdentity(file);
    if (chosen.has(identity)) {
      announce(`${file.name} is already chosen; it was not added again.`);
      return;
    }
    chosen.add(identity);
    const row = createRow(file);
    row.identity = identity;
    row.data = data;
    data.context = row;
    joinBatch([row]);
    const problem = problemWith(file);
    if (problem) {
      showFailure(row, "", `Not sent. ${problem}`, "refused");
      announce(`${file.name} was not sent. ${problem}`);
      return;
    }
    if (limits.auto_start) {
      startUpload(data, row, false);
    } else {
      setStatus(row, "Ready to upload", "ready");
    }
  }

  function startAll() {
    const ready = batch.rows.filter((row) => row.state === "ready");
    joinBatch([]);
    ready.forEach((row) => {
      setStatus(row, "Waiting…", "working");
      startUpload(row.data, row, false);
    });
    if (ready.length) {
      ready[0].buttons.cancel.focus();
    }
  }

  function onProgress(_event, data) {
    const row = data.context;
    row.loaded = data.loaded;
    row.progress.value = Math.floor((data.loaded / data.total) * 100);
    showRowPace(row);
    if (row.watchdog) {
      row.watchdog.poke();
    }
    updateOverall();
  }

  // Uploads stored in S3 that an earlier visit could not record are recorded now.
  function resumePending() {
    const pending = loadPending();
    const rows = pending.map((report) => {
      const row = createRow({ name: report.filename, size: report.size, type: "" });
      row.report = report;
      row.storedBefore = report.size; // in S3 already: none of it is sent from this page
      return row;
    });
    joinBatch(rows);
    rows.forEach(finishRegistration);
  }

  function enhance() {
    const form = $("#upload-form");
    const input = $("#file-input");
    const dropzone = $("#dropzone");
    form.on("submit", (event) => event.preventDefault());
    form.prop("hidden", false);
    $("#nojs-forms").prop("hidden", true);
    $("#protocol").prop("hidden", false);
    $("#start-all").on("click", startAll);
    $("#uploads-more").on("click", showMoreUploads);
    dropzone.on("dragover", () => dropzone.addClass("is-dragover"));
    dropzone.on("dragleave drop", () => dropzone.removeClass("is-dragover"));
    input.fileupload({
      dropZone: dropzone,
      pasteZone: $(document),
      paramName: "file",
      multipart: true,
      singleFileUploads: true,
      limitConcurrentUploads: 3,
      dataType: "text",
      add: onAdd,
      send: onSend,
      progress: onProgress,
    });
    paginateUploads();
    resumePending();
  }

  // Dropping a file outside the zone should not navigate away from the page.
  $(document).on("dragover drop", (event) => event.preventDefault());
  $(enhance);
  if (!config.listAll) {
    const warn = (error) => console.warn("Could not list your uploads:", error.message);
    $(() => refreshUploads().catch(warn));
  }
})(jQuery);
