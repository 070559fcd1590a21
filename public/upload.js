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
      const allowed = limits.allowed_types.join(", ");
      return `This type of file (${file.type || "unknown"}) is not accepted: only ${allowed}.`;
    }
    return null;
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
      throw new Error(
        signal.aborted
          ? `The app did not answer within ${APP_TIMEOUT_SECONDS} s; try again.`
          : "The app could not be reached. Is the server still running?",
      );
    } finally {
      clearTimeout(timer);
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(body.error || `The app answered HTTP ${response.status}.`);
    }
    return body;
  }

  function requestPolicy(file) {
    const query = new URLSearchParams({
      filename: file.name,
      content_type: file.type,
      size: String(file.size),
    });
    return callApp(`/s3_credentials?${query}`);
  }

  function registerUpload(credentials, stored) {
    return callApp("/uploads", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key: stored.key, etag: stored.etag, token: credentials.token }),
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
      : "no answer (network error)";
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
    meta.textContent = `${formatBytes(upload.size)} · ${upload.content_type}`;
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

  let listRequests = 0; // a slow answer must not overwrite a newer one

  async function refreshUploads() {
    const request = (listRequests += 1);
    const uploads = config.listAll
      ? (await callApp("/uploads")).uploads
      : await ownUploadsWithLinks();
    if (request !== listRequests) {
      return;
    }
    document.getElementById("uploads").replaceChildren(...uploads.map(uploadItem));
    document.getElementById("uploads-empty").hidden = uploads.length > 0;
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
    const status = element("p", "file-status", "Waiting…");
    status.setAttribute("aria-live", "polite");
    const cancel = element("button", "button button-small file-cancel", "Cancel");
    cancel.type = "button";
    cancel.setAttribute("aria-label", `Cancel ${file.name}`);
    item.append(name, size, cancel, progress, status);
    document.getElementById("queue").append(item);
    return { element: item, name, progress, status, cancel, cancelled: false };
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    node.textContent = text;
    return node;
  }

  function setStatus(row, text, state) {
    row.status.textContent = text;
    row.element.dataset.state = state;
    if (state !== "working") {
      row.cancel.hidden = true;
    }
  }

  function showFailure(row, code, sentence) {
    setStatus(row, "", "error");
    row.progress.hidden = true;
    if (code) {
      row.status.append(element("code", "error-code", code), " ");
    }
    row.status.append(sentence);
  }

  function showDone(row, upload) {
    row.progress.value = 100;
    const link = element("a", "file-name", upload.filename);
    link.href = upload.url;
    row.name.replaceWith(link);
    setStatus(row, "Uploaded", "done");
  }

  // ---- The upload flow ----------------------------------------------------------------------

  async function startUpload(data, row, retried) {
    const file = data.files[0];
    row.abort = null;
    setStatus(row, "Signing…", "working");
    let credentials;
    try {
      credentials = await requestPolicy(file);
    } catch (error) {
      showFailure(row, "", error.message);
      return;
    }
    if (row.cancelled) {
      return;
    }
    if (!useCredentials(data, credentials, file)) {
      showFailure(row, "", "The app signed another size than this file's; reload and try again.");
      return;
    }
    setStatus(row, "Uploading…", "working");
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

  async function finishUpload(row, credentials, file, xhr) {
    showProtocol(credentials, file, xhr);
    setStatus(row, "Stored in S3; registering…", "working");
    try {
      const { upload } = await registerUpload(credentials, parsePostResponse(xhr, credentials));
      rememberUpload(upload, credentials.token);
      showDone(row, upload);
    } catch (error) {
      showFailure(row, "", error.message);
      return;
    }
    refreshUploads().catch((error) => console.warn("Could not refresh the list:", error.message));
  }

  function handleFailure(data, row, retried, { credentials, file, xhr, textStatus }) {
    if (textStatus === "abort" && row.stalled) {
      const silence = `nothing for ${S3_STALL_SECONDS} s`;
      showFailure(row, "", `S3 at ${config.s3Origin} stopped answering (${silence}); try again.`);
      return;
    }
    if (textStatus === "abort") {
      setStatus(row, "Cancelled", "cancelled");
      return;
    }
    showProtocol(credentials, file, xhr);
    if (xhr.status === 0) {
      const reason = "a network error, or the bucket's CORS rule does not allow this page";
      showFailure(row, "", `S3 could not be reached at ${config.s3Origin}: ${reason}.`);
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

  function cancel(row) {
    row.cancelled = true;
    if (row.abort) {
      row.abort();
    } else {
      setStatus(row, "Cancelled", "cancelled");
    }
  }

  // ---- Overall progress ---------------------------------------------------------------------

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

  // Average speed since this batch started: steadier than an instant rate, honest for a guess.
  function showOverallProgress(loaded, total, startedAt) {
    const percent = total ? Math.floor((loaded / total) * 100) : 0;
    const seconds = (performance.now() - startedAt) / 1000;
    const bytesPerSecond = seconds > 0 ? loaded / seconds : 0;
    document.getElementById("overall").hidden = false;
    document.getElementById("overall-progress").value = percent;
    document.getElementById("overall-percent").textContent = `${percent}%`;
    document.getElementById("overall-speed").textContent =
      `${(bytesPerSecond / 1024 ** 2).toFixed(1)} MB/s`;
    document.getElementById("overall-eta").textContent = formatDuration(
      bytesPerSecond ? (total - loaded) / bytesPerSecond : Number.NaN,
    );
  }

  // ---- Wiring -------------------------------------------------------------------------------

  function onAdd(_event, data) {
    const file = data.files[0];
    const row = createRow(file);
    data.context = row;
    row.cancel.addEventListener("click", () => cancel(row));
    const problem = problemWith(file);
    if (problem) {
      showFailure(row, "", `Not sent. ${problem}`);
      return;
    }
    startUpload(data, row, false);
  }

  function onProgress(_event, data) {
    data.context.progress.value = Math.floor((data.loaded / data.total) * 100);
    if (data.context.watchdog) {
      data.context.watchdog.poke();
    }
  }

  let batchStartedAt = 0;

  function enhance() {
    const form = $("#upload-form");
    const input = $("#file-input");
    const dropzone = $("#dropzone");
    form.on("submit", (event) => event.preventDefault());
    $("#nojs-submit").prop("hidden", true);
    $("#protocol").prop("hidden", false);
    input.prop("multiple", true);
    dropzone.on("dragover", () => dropzone.addClass("is-dragover"));
    dropzone.on("dragleave drop", () => dropzone.removeClass("is-dragover"));
    input.fileupload({
      dropZone: dropzone,
      pasteZone: null,
      paramName: "file",
      multipart: true,
      singleFileUploads: true,
      limitConcurrentUploads: 3,
      dataType: "text",
      add: onAdd,
      send: onSend,
      progress: onProgress,
      start: () => {
        batchStartedAt = performance.now();
      },
      progressall: (_event, data) => showOverallProgress(data.loaded, data.total, batchStartedAt),
      stop: () => {
        document.getElementById("overall-eta").textContent = "all sent";
      },
    });
  }

  // Dropping a file outside the zone should not navigate away from the page.
  $(document).on("dragover drop", (event) => event.preventDefault());
  $(enhance);
  if (!config.listAll) {
    const warn = (error) => console.warn("Could not list your uploads:", error.message);
    $(() => refreshUploads().catch(warn));
  }
})(jQuery);
