// Settings: API keys (create — the secret shown once, with its DSN and a copy button — and
// revoke), the team and invitations, and the projects.

import { ago, badge, busy, errorPanel, field, h, replace, select } from "../ui.js";

const PERMISSIONS = ["ingest", "read", "write", "admin"];

export function mount(root, _route, { api }) {
  const keys = h("div", { id: "keys" }, h("p", { class: "muted" }, "Loading…"));
  const created = h("div", { id: "created-key", "aria-live": "polite" });
  const team = h("div", { id: "team" });
  const projects = h("div", { id: "projects" });
  const integrations = h("div", { id: "integrations" });
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
      created.dataset.keyId = k.id;
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
    h("section", { class: "panel" }, h("h2", {}, "Integrations"), integrations),
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
      if (!d.members.length) {
        replace(team, h("p", { class: "muted" }, "No members yet: invite someone."));
        return;
      }
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

  async function loadIntegrations() {
    try {
      const d = await api("/api/settings/integrations");
      replace(integrations, d.integrations.map((i) => integrationCard(i, api, loadIntegrations)));
    } catch (e) {
      replace(integrations, errorPanel(e, "Could not load the integrations"));
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
                if (created.dataset.keyId === k.id) {
                  replace(created);
                  delete created.dataset.keyId;
                }
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
    const results = await Promise.allSettled([loadKeys(), loadTeam(), loadProjects(), loadIntegrations()]);
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


/** The fields of each channel's config, as `validate_config` in the alerter reads them. */
const CHANNEL_FIELDS = {
  webhook: [["url", "URL", "url"], ["secret", "Signing secret (16+ characters; empty keeps the stored one)", "password"]],
  slack: [["url", "Incoming webhook URL (empty keeps the stored one)", "password"], ["channel", "Channel", "text"]],
  email: [["host", "SMTP server", "text"], ["port", "Port", "number"], ["tls", "TLS", "tls"], ["username", "User name", "text"],
    ["password", "Password (empty keeps the stored one)", "password"], ["from", "From", "email"], ["recipients", "Recipients (comma-separated)", "text"]],
};

function integrationCard(i, api, reload) {
  const out = h("div", { "aria-live": "polite" });
  const cfg = i.config || {};
  const current = { host: cfg.smtp_server, from: cfg.from_email, url: cfg.url, ...cfg };
  const inputs = CHANNEL_FIELDS[i.name].map(([name, label, type]) => {
    const value = current[name];
    const control = type === "tls"
      ? select(`${i.name}-tls`, [["starttls", "STARTTLS"], ["tls", "TLS"], ["none", "None (local relay only)"]], value || "starttls")
      : h("input", { name, type, value: type === "password" ? "" : Array.isArray(value) ? value.join(", ") : value ?? "", autocomplete: "off" });
    control.name = name;
    control.removeAttribute("id");
    return field(label, control);
  });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: i.status === "not_configured" ? true : i.enabled });
  const form = h("form", { class: "filters", "aria-label": `Configure ${i.name}` }, inputs, h("label", {}, enabled, " Enabled"), h("button", { type: "submit" }, "Save"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const d = new FormData(form);
    const config = {};
    for (const [name, , type] of CHANNEL_FIELDS[i.name]) {
      const v = String(d.get(name) || "").trim();
      if (!v) continue;
      if (name === "recipients") config.recipients = v.split(",").map((x) => x.trim()).filter(Boolean);
      else if (type === "number") config[name] = Number(v);
      else config[name] = v;
    }
    await busy(form.querySelector("button"), async () => {
      await api(`/api/settings/integrations/${i.name}`, { method: "PUT", body: { config, enabled: enabled.checked } });
      await reload();
    }, out);
  });
  const test = h("button", {
    type: "button",
    disabled: i.status === "not_configured",
    async onclick() {
      await busy(test, async () => {
        const r = await api(`/api/settings/integrations/${i.name}/test`, { method: "POST" });
        replace(out, r.success
          ? h("p", { class: "ok" }, `Test sent${r.http_status ? ` (HTTP ${r.http_status})` : ""}.`)
          : h("p", { class: "bad" }, `Test failed: ${r.error}${r.http_status ? ` (HTTP ${r.http_status})` : ""}`));
      }, out);
    },
  }, "Send test");
  return h("details", { class: "integration", dataset: { name: i.name } },
    h("summary", {}, h("strong", {}, i.name), " ", badge(i.status.replace("_", " "), i.status),
      i.last_test ? [" · last test ", ago(i.last_test), " ", i.last_test_ok ? badge("ok", "resolved") : badge("failed", "error")] : null,
      i.health?.last_error ? h("span", { class: "bad small" }, ` · last error: ${i.health.last_error}`) : null),
    form, h("p", {}, test), out,
    i.last_test_error ? h("p", { class: "bad small" }, `Last test error: ${i.last_test_error}`) : null);
}
