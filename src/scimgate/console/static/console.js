// scimgate console: the little script it needs, no dependencies, no build step.
// 1. The person and agent pages poll their live.json and redraw access and story when
//    they change.
// 2. Forms with data-confirm ask first.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text; // text only: nothing is parsed as HTML
  if (cls) node.className = cls;
  return node;
}

function drawAccess(tbody, grants, none) {
  tbody.replaceChildren();
  if (grants.length === 0) {
    const row = el("tr", undefined, "none");
    const cell = el("td", none || "no route is open to this person");
    cell.colSpan = 4;
    row.append(cell);
    tbody.append(row);
    return;
  }
  for (const g of grants) {
    const row = el("tr");
    const path = el("td");
    path.append(el("code", g.path_prefix));
    row.append(el("td", g.route), path, el("td", g.via), el("td", g.requires_scopes || "-"));
    tbody.append(row);
  }
}

function drawStory(list, story) {
  list.replaceChildren();
  for (const line of story) {
    const item = el("li");
    item.append(el("time", line.ts), " ", el("strong", line.what), " ",
                el("span", "by " + (line.actor || "-"), "muted"));
    if (line.changes_summary) item.append(el("div", line.changes_summary, "muted"));
    for (const e of line.enforced || []) {
      item.append(el("div", "enforced on " + e.target + " at " + e.applied +
                     " (+" + Math.round(e.after_ms) + " ms)", "enforced"));
    }
    for (const t of line.unconfirmed || []) item.append(el("div", "not yet confirmed on " + t, "error"));
    list.append(item);
  }
}

function drawState(holder, active, state) {
  // an agent's page says which way it is out: "inactive" or "suspended" (owners gone)
  const text = state || (active ? "active" : "inactive");
  holder.replaceChildren(el("span", text, active ? "badge ok" : "badge bad"));
}

function follow(section) {
  const url = section.dataset.live;
  let last = "";
  let head = "";
  async function poll() {
    try {
      const query = head ? "?head=" + encodeURIComponent(head) : "";
      const reply = await fetch(url + query, { credentials: "same-origin", cache: "no-store" });
      if (reply.status === 401) { window.location.reload(); return; } // signed out: sign in again
      if (reply.ok) {
        const data = await reply.json();
        head = String(data.head);
        const text = JSON.stringify(data);
        if (!data.unchanged && text !== last) {
          last = text;
          drawAccess(document.querySelector("#access tbody"), data.grants, section.dataset.none);
          drawStory(document.getElementById("story"), data.story);
          drawState(document.getElementById("state"), data.active, data.state);
          document.getElementById("entries").textContent = String(data.map_entries);
        }
        document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
      }
    } catch (err) {
      document.getElementById("updated").textContent = "offline, retrying";
    }
    window.setTimeout(poll, 1000);
  }
  window.setTimeout(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.querySelector("[data-live]");
  if (live) follow(live);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
