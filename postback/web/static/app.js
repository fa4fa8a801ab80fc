// postback web app: the token picker and the live preview of the Event Notifications
// editor. Plain JavaScript, no library; every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const url = document.getElementById("url");
  const body = document.getElementById("body");
  let target = url;
  for (const field of [url, body]) {
    if (field) field.addEventListener("focus", () => { target = field; });
  }

  // the token picker: filter as you type; a choice goes in at the cursor
  const search = document.getElementById("token-search");
  const items = document.querySelectorAll("#token-list li");
  if (search) {
    search.addEventListener("input", () => {
      const q = search.value.trim().toLowerCase();
      for (const li of items) li.hidden = q !== "" && !li.dataset.search.includes(q);
    });
  }
  for (const button of document.querySelectorAll("button.token")) {
    button.addEventListener("click", () => {
      if (!target) return;
      const text = "{" + button.dataset.token + "}";
      const start = target.selectionStart ?? target.value.length;
      const end = target.selectionEnd ?? target.value.length;
      target.setRangeText(text, start, end, "end");
      target.focus();
      target.dispatchEvent(new Event("input", { bubbles: true }));
    });
  }

  // the live preview: the exact request for sample values, or what is wrong
  const preview = document.getElementById("preview");
  const out = document.getElementById("preview-request");
  const form = document.getElementById("setting-form");
  if (!preview || !out || !form) return;
  let timer = null;
  const refresh = async () => {
    const data = new FormData(form);
    const payload = {
      url: data.get("url") || "", method: data.get("method") || "GET",
      body_format: data.get("body_format") || "json", body: data.get("body") || "",
    };
    try {
      const res = await fetch(preview.dataset.endpoint, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": preview.dataset.csrf },
        body: JSON.stringify(payload),
      });
      const got = await res.json();
      if (got.request) {
        const r = got.request;
        let text = r.method + " " + r.url + "\n";
        for (const [k, v] of Object.entries(r.headers)) text += k + ": " + v + "\n";
        if (r.body) text += "\n" + r.body;
        out.textContent = text;
        out.classList.remove("invalid");
      } else if (got.problems) {
        out.textContent = got.problems.map((p) => p.field + ": " + p.message).join("\n");
        out.classList.add("invalid");
      }
    } catch (e) {
      out.textContent = "";
    }
  };
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 200);
  });
  form.addEventListener("change", refresh);
  refresh();
});

// the catalog upload goes into the program chosen last, in either list, and names it
document.addEventListener("DOMContentLoaded", () => {
  const shown = document.getElementById("c-program");
  const target = document.getElementById("u-program");
  const name = document.getElementById("u-target-name");
  if (!target) return;
  const named = () => {
    if (name && target.selectedOptions[0]) name.textContent = target.selectedOptions[0].text;
  };
  target.addEventListener("change", named);
  if (shown) {
    shown.addEventListener("change", () => { target.value = shown.value; named(); });
  }
});

// the catalog upload: show the upload's progress, then the page the server answers with
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("upload-form");
  const bar = document.getElementById("u-progress");
  const status = document.getElementById("u-status");
  if (!form || !bar) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 90);
    });
    xhr.upload.addEventListener("load", () => {
      bar.value = 90;
      if (status) status.textContent = status.dataset.processing || "…";
    });
    xhr.addEventListener("load", () => {
      bar.value = 100;
      // a saved upload redirects to the catalog page (Post/Redirect/Get): the address bar
      // shows that page, so a reload reads it again and uploads nothing
      const landed = xhr.responseURL && xhr.responseURL !== form.action ? xhr.responseURL : null;
      document.open();
      document.write(xhr.responseText);
      document.close();
      if (landed) history.replaceState(null, "", landed);
    });
    xhr.addEventListener("error", () => { if (status) status.textContent = "✗"; });
    xhr.send(new FormData(form));
  });
});

// after a test send, take the reader (and the keyboard focus) to its result; after a
// refused form, to the first field that needs fixing (its message is its description)
document.addEventListener("DOMContentLoaded", () => {
  const result = document.getElementById("test-result");
  const invalid = document.querySelector('[aria-invalid="true"]');
  if (result) result.focus();
  else if (invalid) invalid.focus();
});
