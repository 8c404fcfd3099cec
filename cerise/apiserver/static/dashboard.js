/* The Cerise dashboard. Fills the page's [data-fragment] elements with HTML rendered by the
   apiserver and polls them for changes (only while the tab is visible), follows a job's log,
   and cancels and deletes jobs through the jobs API. In cluster mode it sends the token the
   person pasted into the sign-in form, kept in this tab's sessionStorage, as a bearer token
   (or a proxy in front adds the header and no token is needed). */
"use strict";

const TOKEN = "cerise-token";
const page = document.body.dataset;
const notice = document.getElementById("notice");

class Problem extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function credentials() {
  const token = sessionStorage.getItem(TOKEN);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/* A request to this namespace's `path`; an answer other than 2xx or 304 throws a Problem. */
async function call(method, path, headers = {}) {
  let answer;
  try {
    answer = await fetch(page.base + path, {
      method, headers: { ...credentials(), ...headers }, cache: "no-store",
    });
  } catch {
    throw new Problem("The service cannot be reached; trying again…", 0);
  }
  if (!answer.ok && answer.status !== 304) {
    let message = `${answer.status} ${answer.statusText}`;
    try {
      const detail = (await answer.json()).detail;
      if (typeof detail === "string") message = detail;
    } catch {
      /* not JSON: keep the status line */
    }
    throw new Problem(message, answer.status);
  }
  return answer;
}

function tell(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

/* Who may see what: a 401 asks for a token (a stored one was refused: forget it), a 403
   lets the person try another token or namespace. Either way no job data stays on screen. */
function refused(problem) {
  const form = document.getElementById("sign-in");
  if (!form || (problem.status !== 401 && problem.status !== 403)) return false;
  const hadToken = sessionStorage.getItem(TOKEN) !== null;
  if (problem.status === 401) sessionStorage.removeItem(TOKEN);
  document.body.classList.add("signed-out");
  for (const element of document.querySelectorAll("[data-fragment]")) element.replaceChildren();
  form.hidden = false;
  if (problem.status === 403) tell(problem.message);
  else tell(hadToken ? "The service did not accept that token; paste another one." : "");
  return true;
}

function ago(stamp) {
  const seconds = Math.max(0, (Date.now() - Date.parse(stamp)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function showAges(within) {
  for (const time of within.querySelectorAll("time[data-age]")) {
    const stamp = time.getAttribute("datetime");
    if (!stamp) continue;
    time.title = new Date(stamp).toLocaleString();
    time.textContent = ago(stamp);
  }
}

/* Replace an element's content, keeping the keyboard focus on the element of the same id. */
function replace(element, html) {
  const focused = element.contains(document.activeElement) ? document.activeElement.id : "";
  element.innerHTML = html;
  showAges(element);
  if (focused) document.getElementById(focused)?.focus();
}

/* Keep `element` showing its fragment; `changed` sees every new version. The ETag of the
   version shown makes the server answer 304 while nothing changed. */
function keepCurrent(element, changed) {
  const every = Number(element.dataset.every) || 2000;
  let shown = null;
  let etag = null;
  let timer = null;
  let running = null;
  let stopped = false;

  async function once() {
    try {
      const answer = await call("GET", element.dataset.fragment,
                                etag ? { "If-None-Match": etag } : {});
      if (stopped) return;
      if (answer.status !== 304) {
        etag = answer.headers.get("ETag");
        const html = await answer.text();
        if (html !== shown) {
          shown = html;
          replace(element, html);
          changed?.(element);
        }
      }
      if (!document.body.classList.contains("signed-out")) tell("");
    } catch (problem) {
      if (refused(problem) || problem.status === 404) stop();
      if (!document.body.classList.contains("signed-out")) tell(problem.message);
    }
  }

  function refresh() {
    running ??= once().finally(() => {
      running = null;
      clearTimeout(timer);
      if (!stopped) timer = setTimeout(tick, every);
    });
    return running;
  }

  function tick() {
    if (document.hidden) timer = setTimeout(tick, every);
    else refresh();
  }

  function stop() {
    stopped = true;
    clearTimeout(timer);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !stopped && !running) refresh();
  });
  refresh();
  return { refresh, stop };
}

/* Append the job log's new lines to `pre` every second while the tab is visible; after the
   job has ended, read it twice more (the last lines may come just after the final state). */
function followLog(pre) {
  const follow = document.getElementById("follow");
  let offset = 0;
  let endedReads = null;

  async function once() {
    const answer = await call("GET", `${pre.dataset.log}?offset=${offset}`);
    const text = await answer.text();
    offset = Number(answer.headers.get("X-Log-Offset")) || offset;
    if (text) {
      pre.append(text);
      if (follow.checked) pre.scrollTop = pre.scrollHeight;
    }
  }

  async function loop() {
    for (;;) {
      if (!document.hidden) {
        try {
          await once();
        } catch (problem) {
          if (refused(problem) || problem.status === 404) return;
        }
        if (endedReads !== null && --endedReads < 0) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  follow.addEventListener("change", () => {
    if (follow.checked) pre.scrollTop = pre.scrollHeight;
  });
  loop();
  return {
    ended() {
      endedReads ??= 2;
    },
  };
}

function jobPage(element) {
  const cancel = document.getElementById("cancel");
  const log = followLog(document.getElementById("log"));
  const job = keepCurrent(element, () => {
    const facts = element.querySelector("article.job")?.dataset;
    if (!facts) return;
    cancel.disabled = facts.cancellable !== "true";
    document.title = `${element.querySelector("h1")?.firstChild?.textContent.trim()} · Cerise`;
    if (facts.final === "true") {
      job.stop();
      log.ended();
    }
  });
  return job;
}

const QUESTIONS = {
  cancel: "Cancel this job? What runs is stopped; this cannot be undone.",
  delete: "Delete this job, its outputs and its log? This cannot be undone.",
};

async function act(button, pollers) {
  const { action, job } = button.dataset;
  if (!window.confirm(QUESTIONS[action])) return;
  button.disabled = true;
  const path = `/jobs/${encodeURIComponent(job)}`;
  try {
    if (action === "cancel") {
      await call("POST", `${path}/cancel`);
      tell("Cancelling…");
      await Promise.all(pollers.map((poller) => poller.refresh()));
    } else {
      await call("DELETE", path);
      window.location.assign(`${page.base}/`);
    }
  } catch (problem) {
    if (!refused(problem)) tell(problem.message);
    button.disabled = false;
  }
}

/* With a token, a plain link would reach the exchange without it: fetch with the token and
   save the answer instead. Never send the token to another origin. */
async function download(link) {
  const answer = await fetch(link.href, { headers: credentials() });
  if (!answer.ok) throw new Problem(`${answer.status} ${answer.statusText}`, answer.status);
  const url = URL.createObjectURL(await answer.blob());
  const save = document.createElement("a");
  save.href = url;
  save.download = link.dataset.download;
  save.click();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function start() {
  const pollers = [];
  for (const element of document.querySelectorAll("[data-fragment]")) {
    pollers.push(element.id === "job" ? jobPage(element) : keepCurrent(element));
  }
  setInterval(() => showAges(document), 1000);

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) {
      act(button, pollers);
      return;
    }
    const link = event.target.closest("a[data-download]");
    if (link && sessionStorage.getItem(TOKEN) && new URL(link.href).origin === location.origin) {
      event.preventDefault();
      download(link).catch((problem) => tell(problem.message));
    }
  });

  const form = document.getElementById("sign-in");
  form?.addEventListener("submit", (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    sessionStorage.setItem(TOKEN, String(fields.get("token")).trim());
    const namespace = String(fields.get("namespace")).trim();
    if (namespace === page.namespace) window.location.reload();
    else window.location.assign(`${page.root}/ns/${encodeURIComponent(namespace)}/`);
  });
  const signOut = document.getElementById("sign-out");
  if (signOut) {
    signOut.hidden = sessionStorage.getItem(TOKEN) === null;
    signOut.addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN);
      window.location.reload();
    });
  }
}

start();
