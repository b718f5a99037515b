// Settings: API keys (create — the secret shown once, with its DSN and a copy button — and
// revoke), the team and invitations, and the projects.

import { ago, badge, busy, errorPanel, field, h, replace, select } from "../ui.js";

const PERMISSIONS = ["ingest", "read", "write", "admin"];

export function mount(root, _route, { api }) {
  const keys = h("div", { id: "keys" }, h("p", { class: "muted" }, "Loading…"));
  const created = h("div", { id: "created-key", "aria-live": "polite" });
  const team = h("div", { id: "team" });
  const projects = h("div", { id: "projects" });
  const keyOut = h("div", { "aria-live": "polite" });
  const teamOut = h("div", { "aria-live": "polite" });

  const keyForm = h(
    "form",
    { class: "filters", id: "new-key-form", "aria-label": "Create an API key" },
    field("Name", h("input", { name: "name", required: true, maxlength: 100 })),
    h("fieldset", { class: "inline" }, h("legend", {}, "Permissions"),
      PERMISSIONS.map((p) => h("label", {}, h("input", { type: "checkbox", name: "permissions", value: p, checked: p === "ingest" }), ` ${p}`))),
    h("button", { type: "submit" }, "Create key"),
  );
  keyForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(keyForm);
    const permissions = data.getAll("permissions").map(String);
    await busy(keyForm.querySelector("button[type=submit]"), async () => {
      const k = await api("/api/settings/api-keys", { method: "POST", body: { name: String(data.get("name")).trim(), permissions } });
      replace(keyOut);
      replace(created, shownOnce(k));
      keyForm.reset();
      created.querySelector("button")?.focus();
      await loadKeys();
    }, keyOut);
  });

  const inviteForm = h(
    "form",
    { class: "filters", "aria-label": "Invite a team member" },
    field("E-mail", h("input", { type: "email", name: "email", required: true })),
    field("Name", h("input", { name: "name" })),
    field("Role", select("role", [["developer", "Developer"], ["admin", "Admin"], ["viewer", "Viewer"], ["owner", "Owner"]], "developer")),
    h("button", { type: "submit" }, "Invite"),
  );
  inviteForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(inviteForm);
    const body = { email: String(data.get("email")).trim(), role: String(data.get("role")) };
    if (String(data.get("name")).trim()) body.name = String(data.get("name")).trim();
    await busy(inviteForm.querySelector("button"), async () => {
      await api("/api/settings/team/invite", { method: "POST", body });
      replace(teamOut, h("p", { class: "ok" }, `Invited ${body.email}.`));
      inviteForm.reset();
      await loadTeam();
    }, teamOut);
  });

  replace(
    root,
    h("h1", {}, "Settings"),
    h("section", { class: "panel" }, h("h2", {}, "API keys"), keyForm, keyOut, created, keys),
    h("section", { class: "panel" }, h("h2", {}, "Team"), inviteForm, teamOut, team),
    h("section", { class: "panel" }, h("h2", {}, "Projects"), projects),
  );

  async function loadKeys() {
    try {
      const d = await api("/api/settings/api-keys");
      replace(keys, keyTable(d.api_keys));
    } catch (e) {
      replace(keys, errorPanel(e, e.kind === "forbidden" ? "Listing keys needs an admin key" : "Could not load the keys"));
      if (e.kind !== "forbidden") throw e;
    }
  }

  async function loadTeam() {
    try {
      const d = await api("/api/settings/team");
      replace(team, h("table", {},
        h("thead", {}, h("tr", {}, ["Name", "E-mail", "Role", "Status", "Last active"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, d.members.map((m) => h("tr", {}, h("td", {}, m.name || "—"), h("td", {}, m.email), h("td", {}, m.role), h("td", {}, badge(m.status)), h("td", {}, ago(m.last_active))))),
      ));
    } catch (e) {
      replace(team, errorPanel(e, "Could not load the team"));
      if (e.kind !== "forbidden") throw e;
    }
  }

  async function loadProjects() {
    try {
      const d = await api("/api/projects");
      replace(projects, h("ul", { class: "plain" }, d.projects.map((p) => h("li", {}, h("strong", {}, p.name), " ", h("code", { class: "muted" }, p.id), " · created ", ago(p.created_at)))));
    } catch (e) {
      replace(projects, errorPanel(e, "Could not load the projects"));
      if (e.kind !== "forbidden") throw e;
    }
  }

  function keyTable(list) {
    return h("table", { class: "keys" },
      h("thead", {}, h("tr", {}, ["Name", "Key", "Permissions", "Last used", "Expires", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, list.map((k) => {
        const revoke = h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name}` }, "Revoke…");
        const cell = h("td", {}, revoke);
        revoke.addEventListener("click", () => {
          const yes = h("button", {
            type: "button",
            class: "danger",
            async onclick() {
              await busy(yes, async () => {
                await api(`/api/settings/api-keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
                replace(keyOut, h("p", { class: "ok" }, `Revoked ${k.name}.`));
                await loadKeys();
              }, keyOut);
            },
          }, "Revoke for good");
          const no = h("button", { type: "button", onclick: () => replace(cell, revoke) }, "Cancel");
          replace(cell, yes, " ", no);
          yes.focus();
        });
        return h("tr", { dataset: { id: k.id } },
          h("td", {}, k.name), h("td", {}, h("code", {}, k.key_preview)), h("td", {}, (k.permissions || []).join(", ")),
          h("td", {}, k.last_used ? ago(k.last_used) : "never"), h("td", {}, k.expires_at ? ago(k.expires_at) : "never"),
          h("td", {}, ago(k.created_at)), cell);
      })));
  }

  let loaded = false;
  async function refresh() {
    // Forms keep their input: only the lists are redrawn, and only on the first load and after
    // a change (a key list that moves under the cursor is worse than one a few seconds old).
    if (loaded) return;
    loaded = true;
    const results = await Promise.allSettled([loadKeys(), loadTeam(), loadProjects()]);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      loaded = false;
      throw failed.reason;
    }
  }
  return { refresh };
}

/** The new key, shown once, with its DSN for Sentry SDKs and copy buttons. */
function shownOnce(k) {
  const dsn = dsnFor(k.api_key, k.project_id);
  const copy = (text, what) => h("button", {
    type: "button",
    async onclick(ev) {
      const b = ev.currentTarget;
      try {
        await navigator.clipboard.writeText(text);
        b.textContent = "Copied";
      } catch {
        b.textContent = "Copy failed: select the text";
      }
      setTimeout(() => { b.textContent = `Copy ${what}`; }, 2000);
    },
  }, `Copy ${what}`);
  return h("div", { class: "shown-once", role: "status" },
    h("p", {}, h("strong", {}, `Key "${k.name}" created.`), " It is shown only now: copy it somewhere safe."),
    h("p", {}, h("code", { class: "secret", id: "new-key-secret" }, k.api_key), " ", copy(k.api_key, "key")),
    dsn ? h("p", {}, "Sentry DSN: ", h("code", { class: "secret" }, dsn), " ", copy(dsn, "DSN")) : null,
  );
}

/** `scheme://key@host/<project UUID as a decimal number>`, as ingest's Sentry endpoint reads it. */
function dsnFor(key, projectId) {
  if (!key || !projectId) return null;
  try {
    const n = BigInt(`0x${projectId.replaceAll("-", "")}`);
    return `${location.protocol}//${key}@${location.host}/${n.toString()}`;
  } catch {
    return null;
  }
}

