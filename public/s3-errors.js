/*
 * S3's XML errors, explained: each code the upload page can meet, as one sentence with its
 * likely cause and its fix, in ONE table. Codes and their elements follow S3's error page
 * (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html) and the local S3's
 * table (local_s3/errors.py).
 *
 * Pure: no page, no network, no clock. The page loads it before upload.js (window.S3Errors);
 * the tests load it into a blank page and call it.
 */
(function (root) {
  "use strict";

  const MAX_SKEW_MINUTES = 15; // S3 refuses a request time more than 15 minutes from its own
  // https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-ownership-error-responses.html
  const ACLS_DISABLED = "the bucket has ACLs disabled (Object Ownership: bucket owner enforced)";

  // An expired form (POST: "Invalid according to Policy: Policy expired.") or URL (PUT:
  // "Request has expired"): the page asks for a fresh one once before giving up.
  function isExpired(error) {
    return (
      error.code === "AccessDenied" &&
      /Policy expired|Request has expired/.test(error.message)
    );
  }

  // The region S3 says the bucket is in: the error's Region element (AuthorizationHeaderMalformed,
  // AuthorizationQueryParametersError, a POST's x-amz-credential), else the x-amz-bucket-region
  // header S3 sends with PermanentRedirect (if the CORS rule exposes it), else the regional host
  // in its Endpoint element (bucket.s3.eu-west-1.amazonaws.com).
  function bucketRegion(error) {
    const host = /(?:^|\.)s3[.-]([a-z0-9-]+)\.amazonaws\.com/.exec(error.details.Endpoint || "");
    return error.details.Region || error.region || (host ? host[1] : "");
  }

  function wrongRegion(error) {
    const region = bucketRegion(error);
    return region
      ? `The bucket is in ${region}, not in the region the app signs for: set AWS_REGION=${region}.`
      : "The app signs for a region or endpoint that is not the bucket's: set AWS_REGION (and " +
          "AWS_ENDPOINT_URL_S3) to the bucket's.";
  }

  // RequestTime and ServerTime as S3 writes them: 20260101T000000Z, ISO 8601, or an HTTP date.
  function parseTime(text) {
    const basic = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text || "");
    if (basic) {
      const [, year, month, day, hour, minute, second] = basic.map(Number);
      return Date.UTC(year, month - 1, day, hour, minute, second);
    }
    return Date.parse(text || "");
  }

  // Seconds the request's clock (this server's, which signed it) is ahead of S3's; null if unknown.
  function skewSeconds(error) {
    const { RequestTime: requestTime, ServerTime: serverTime } = error.details;
    const skew = (parseTime(requestTime) - parseTime(serverTime)) / 1000;
    return Number.isFinite(skew) ? Math.round(skew) : null;
  }

  function skewSentence(error) {
    const skew = skewSeconds(error);
    const measured =
      skew === null
        ? "This server's clock and S3's differ"
        : `This server's clock is ${Math.abs(skew)} s ${skew > 0 ? "ahead of" : "behind"} S3's`;
    return `${measured} (S3 allows ${MAX_SKEW_MINUTES} minutes): set the clock right (NTP).`;
  }

  function accessDenied(error, context) {
    if (/Policy expired/.test(error.message)) {
      return (
        "The signed form expired before S3 received the file (S3 judges expiry by its own " +
        "clock): try again; if it keeps happening, check this server's clock or raise " +
        "UPLOAD_POLICY_TTL."
      );
    }
    if (/Request has expired/.test(error.message)) {
      return (
        "The presigned URL expired before S3 received the file: try again; if it keeps " +
        "happening, check this server's clock or raise UPLOAD_POLICY_TTL."
      );
    }
    if (/not valid yet/.test(error.message)) {
      return (
        "The URL is signed for a time still ahead of S3's clock: set this server's clock " +
        "right (NTP)."
      );
    }
    const unsigned = error.details.HeadersNotSigned;
    if (unsigned) {
      return (
        `The request carried headers the signature does not cover (${unsigned}); S3 refuses ` +
        "unsigned x-amz-* headers. A browser extension or proxy may have added them."
      );
    }
    if (/Policy Condition failed|Extra input fields/.test(error.message)) {
      return (
        `S3 refused the form: it does not match the signed policy (${error.message}). ` +
        "Reload the page and try again."
      );
    }
    const write = context.method === "PUT" ? "PUT" : "POST";
    return (
      `S3 refused the ${write}: the app's credentials need s3:PutObject on the upload prefix ` +
      "(and s3:PutObjectAcl with S3_ACL), and no bucket policy may deny it."
    );
  }

  // The signed text S3 computed against ours: for POST the StringToSign is the base64 policy;
  // for PUT the canonical request shows where the request differs.
  function signedTexts(error, ours) {
    const theirs = error.details;
    if (theirs.CanonicalRequest && ours.canonicalRequest) {
      const name = "canonical request";
      return { name, ours: ours.canonicalRequest, theirs: theirs.CanonicalRequest };
    }
    if (theirs.StringToSign && ours.stringToSign) {
      return { name: "string to sign", ours: ours.stringToSign, theirs: theirs.StringToSign };
    }
    return null;
  }

  function signatureMismatch(error, context) {
    const texts = signedTexts(error, context.ours || {});
    if (texts && texts.ours !== texts.theirs) {
      return (
        `S3 signed a different ${texts.name} than the app did (first difference highlighted ` +
        "in the Protocol panel): the request was changed after signing, e.g. another size, " +
        "type, header or key than the signed one."
      );
    }
    const same = texts ? `S3 signed the same ${texts.name} as the app, so the key differs: ` : "";
    return (
      `${same}AWS_SECRET_ACCESS_KEY is not the secret of AWS_ACCESS_KEY_ID, or AWS_REGION is ` +
      "not the bucket's region."
    );
  }

  // The one table: code -> (error, context) -> sentence. context: {method, maxHuman, ours}.
  const EXPLANATIONS = {
    AccessDenied: accessDenied,
    AccessControlListNotSupported: () =>
      `S3 refused the ACL the app signs: ${ACLS_DISABLED}. Unset S3_ACL (only ` +
      "bucket-owner-full-control is still accepted).",
    AuthorizationHeaderMalformed: wrongRegion,
    AuthorizationQueryParametersError: (error) =>
      bucketRegion(error)
        ? wrongRegion(error)
        : `S3 could not read the presigned URL (${error.message}): the URL was cut or changed.`,
    BadDigest: () => "The bytes changed on their way to S3 (Content-MD5 differs): try again.",
    EntityTooLarge: (_error, context) =>
      `This file is larger than the ${context.maxHuman || "signed"} limit.`,
    EntityTooSmall: () => "This file is smaller than the signed minimum: empty files are refused.",
    ExpiredToken: () =>
      "The temporary credentials expired: renew AWS_SESSION_TOKEN (and its key pair).",
    IllegalLocationConstraintException: wrongRegion,
    IncompleteBody: () =>
      "S3 received fewer bytes than the request announced: the connection broke; try again.",
    InternalError: () => "S3 had an internal error; try again (S3 asks clients to retry).",
    InvalidAccessKeyId: (error) =>
      `S3 does not know the access key ${error.details.AWSAccessKeyId || "the app signs with"}: ` +
      "check AWS_ACCESS_KEY_ID, that the key is active, and that it belongs to this S3 service.",
    InvalidArgument: (error) =>
      bucketRegion(error) && /region/i.test(error.message)
        ? wrongRegion(error)
        : `S3 refused ${error.details.ArgumentName || "an argument"} (${error.message}): the ` +
          "app signed a value this S3 service does not accept.",
    InvalidDigest: () => "The Content-MD5 sent with the file is not a base64 MD5: a bug to report.",
    InvalidPolicyDocument: (error) =>
      `S3 could not read the signed policy (${error.message}): the form was changed on its ` +
      "way, or this S3 service does not support POST policies (set UPLOAD_METHOD=put).",
    InvalidRequest: (error) => `S3 refused the request as invalid (${error.message}).`,
    InvalidToken: () =>
      "S3 refused the session token: check AWS_SESSION_TOKEN, or unset it for permanent keys.",
    KeyTooLongError: () =>
      "The object key is longer than S3's 1024 bytes: shorten UPLOAD_KEY_PREFIX.",
    MalformedPOSTRequest: () =>
      "S3 could not read the upload form: a proxy changed the request, or this S3 service " +
      "does not support browser POST uploads (set UPLOAD_METHOD=put).",
    MaxPostPreDataLengthExceededError: () =>
      "The form's fields before the file are over S3's 20 KB: the file name is too long.",
    MetadataTooLarge: () => "The file name is too long to keep as S3 metadata (2 KB at most).",
    MethodNotAllowed: (error) =>
      `This S3 service does not allow ${error.details.Method || "this method"} here` +
      (error.details.Method === "POST" ? ": it has no browser POST; set UPLOAD_METHOD=put." : "."),
    MissingContentLength: () => "The upload had no Content-Length: S3 needs the size up front.",
    NoSuchUpload: () =>
      "This large file's upload is no longer in progress in S3 (finished, cancelled or cleaned " +
      "up after a day): choose the file again to start over.",
    NoSuchBucket: (error) =>
      `The bucket ${error.details.BucketName || ""} does not exist here: check S3_BUCKET and ` +
      "AWS_ENDPOINT_URL_S3.",
    NotImplemented: (_error, context) =>
      context.method === "PUT"
        ? "This S3 service does not implement a header the upload sends."
        : "This S3 service does not implement browser POST uploads: set UPLOAD_METHOD=put.",
    PermanentRedirect: wrongRegion,
    PreconditionFailed: () =>
      "S3 expected a multipart/form-data upload: a proxy changed the request's type.",
    RequestTimeTooSkewed: skewSentence,
    RequestTimeout: () =>
      "S3 waited too long for the file's bytes (the connection stalled): try again.",
    ServiceUnavailable: () => "S3 is unavailable for a moment: try again in a few seconds.",
    SignatureDoesNotMatch: signatureMismatch,
    SlowDown: () => "S3 asks to slow down (too many requests): wait a few seconds and try again.",
    TemporaryRedirect: (error) =>
      "S3 is still redirecting requests for this new bucket to its region (DNS catches up " +
      `within hours): set AWS_REGION${bucketRegion(error) ? `=${bucketRegion(error)}` : ""} so ` +
      "the app uses the regional host at once.",
    XAmzContentSHA256Mismatch: () =>
      "The bytes changed on their way to S3 (SHA-256 differs from the signed one): try again.",
  };

  function explain(error, context) {
    const sentence = EXPLANATIONS[error.code];
    if (sentence) {
      return sentence(error, context || {});
    }
    return error.message || "S3 refused the upload.";
  }

  // S3's <Error> as {code, message, status, details: {Element: text}, region}; an answer
  // without XML (a proxy's page, a HEAD) keeps the HTTP status as its code.
  function fromXml(text, status, regionHeader) {
    const answer = text ? new DOMParser().parseFromString(text, "application/xml") : null;
    const root = answer && answer.documentElement;
    const details = {};
    if (root && root.nodeName === "Error" && !answer.getElementsByTagName("parsererror").length) {
      for (const child of root.children) {
        details[child.nodeName] = child.textContent;
      }
    }
    return {
      code: details.Code || `HTTP ${status}`,
      message: details.Message || "",
      status,
      details,
      region: regionHeader || "",
    };
  }

  // The index of the first character where two texts differ, or -1 when they are equal.
  function firstDifference(ours, theirs) {
    const shorter = Math.min(ours.length, theirs.length);
    for (let index = 0; index < shorter; index += 1) {
      if (ours[index] !== theirs[index]) {
        return index;
      }
    }
    return ours.length === theirs.length ? -1 : shorter;
  }

  // Where two texts part and where they agree again: {start, oursEnd, theirsEnd}, the span
  // each text has of its own between a common beginning and a common end; null when equal. A
  // changed character in a base64 policy or a canonical request is then a few marked characters.
  function difference(ours, theirs) {
    const start = firstDifference(ours, theirs);
    if (start === -1) {
      return null;
    }
    let common = 0;
    const room = Math.min(ours.length, theirs.length) - start;
    while (common < room && ours[ours.length - 1 - common] === theirs[theirs.length - 1 - common]) {
      common += 1;
    }
    return { start, oursEnd: ours.length - common, theirsEnd: theirs.length - common };
  }

  // [before, the differing part, after] of one text.
  function cut(text, start, end) {
    return [text.slice(0, start), text.slice(start, end), text.slice(end)];
  }

  root.S3Errors = {
    EXPLANATIONS,
    cut,
    difference,
    explain,
    firstDifference,
    fromXml,
    isExpired,
    signedTexts,
    skewSeconds,
  };
})(typeof window === "undefined" ? globalThis : window);
