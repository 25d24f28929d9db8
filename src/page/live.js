// The live page's behaviour: opens one WebSocket on this bridge, applies
// every message the way a frontend does (CREATE and DATA_STATIC add or
// merge, DELETE removes, DATA_DYNAMIC_* replace the live columns) and shows
// the result, the lifecycle events and the close code.
//
// The query string can pre-fill the form: access_token, scope and
// machine_uuid (repeatable); with a token it connects at once. The token is
// then taken out of the address bar so it does not stay in the history.
//
// Everything is written with textContent: machine titles and owners come
// from outside and are never read as HTML.
"use strict";

const MAX_EVENTS = 200;
const LIFECYCLE = new Set([
  "BOOTUP_START", "BOOTUP_SUCCESS", "BOOTUP_FAIL",
  "SHUTDOWN_START", "SHUTDOWN_SUCCESS", "SHUTDOWN_FAIL",
]);

const el = (id) => document.getElementById(id);

/** What the page knows: one entry per machine in scope, by UUID. */
const machines = new Map();
/** The table row of each machine, kept so a row can flash. */
const rows = new Map();
let socket = null;
let eventCount = 0;
let dynamicCount = 0;
let lastDynamic = null;

function entry(uuid) {
  let machine = machines.get(uuid);
  if (!machine) {
    machine = { properties: null, state: null, disks: null, connections: null };
    machines.set(uuid, machine);
  }
  return machine;
}

/** Applies one envelope; returns the UUID a lifecycle event concerns. */
function apply(message) {
  const body = message.body || {};
  switch (message.type) {
    case "CREATE":
      entry(body.uuid).properties = body;
      return null;
    case "DELETE":
      machines.delete(body.uuid);
      return null;
    case "DATA_STATIC":
      for (const [uuid, properties] of Object.entries(body)) {
        entry(uuid).properties = properties;
      }
      return null;
    case "DATA_DYNAMIC":
      // Only fresh machines are listed; a missing one is "fetching".
      for (const [uuid, machine] of machines) {
        machine.state = body[uuid] || null;
      }
      dynamicCount += 1;
      lastDynamic = message.timestamp;
      return null;
    case "DATA_DYNAMIC_DISKS":
      for (const [uuid, disks] of Object.entries(body)) {
        if (machines.has(uuid)) machines.get(uuid).disks = disks.disks;
      }
      return null;
    case "DATA_DYNAMIC_CONNECTIONS":
      for (const [uuid, seen] of Object.entries(body)) {
        if (machines.has(uuid)) machines.get(uuid).connections = seen.active_connections;
      }
      return null;
    default:
      return LIFECYCLE.has(message.type) ? body.uuid : null;
  }
}

function title(uuid) {
  const properties = machines.get(uuid)?.properties;
  return properties?.title || uuid;
}

function mib(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1024 ? `${(value / 1024).toFixed(1)} GiB` : `${value} MiB`;
}

function gib(bytes) {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

function disksText(machine) {
  const disks = machine.disks || machine.properties?.disks;
  if (!disks || disks.length === 0) return "–";
  return disks
    .map((disk) => {
      const used = disk.occupied_bytes === undefined ? "" : `${gib(disk.occupied_bytes)} / `;
      return `${disk.name} ${used}${gib(disk.size_bytes)}${disk.system ? " (system)" : ""}`;
    })
    .join(", ");
}

function ownerText(owner) {
  if (!owner) return "–";
  return owner.username || [owner.name, owner.surname].filter(Boolean).join(" ") || owner.uuid;
}

function cells(uuid, machine) {
  const state = machine.state;
  const properties = machine.properties || {};
  let phase = ["–", ""];
  if (state) {
    if (state.loading) phase = [state.active ? "active, loading" : "loading", "loading"];
    else phase = state.active ? ["active", "active"] : ["off", "off"];
  }
  const ram = state ? `${mib(state.ram_used)} / ${mib(state.ram_max)}` : "–";
  const connections = machine.connections;
  return [
    [properties.title || uuid, ""],
    [ownerText(properties.owner), ""],
    phase,
    [state ? String(state.vcpu) : "–", "number"],
    [ram, "number"],
    [disksText(machine), ""],
    [connections && connections.length ? connections.join(", ") : "–", ""],
    state ? ["fresh", "fresh"] : ["fetching", "fetching"],
  ];
}

function render() {
  const body = el("machines").tBodies[0];
  for (const [uuid, row] of rows) {
    if (!machines.has(uuid)) {
      row.remove();
      rows.delete(uuid);
    }
  }
  const order = [...machines.keys()].sort((a, b) => title(a).localeCompare(title(b)));
  for (const uuid of order) {
    let row = rows.get(uuid);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.uuid = uuid;
      for (let i = 0; i < 8; i += 1) row.appendChild(document.createElement("td"));
      rows.set(uuid, row);
    }
    cells(uuid, machines.get(uuid)).forEach(([text, style], index) => {
      const cell = row.cells[index];
      if (cell.textContent !== text) cell.textContent = text;
      cell.className = style;
    });
    body.appendChild(row);
  }

  const fresh = [...machines.values()].filter((machine) => machine.state).length;
  el("empty").hidden = machines.size > 0;
  el("summary").textContent =
    `${machines.size} machines, ${fresh} fresh` +
    (lastDynamic ? `; last DATA_DYNAMIC ${lastDynamic}` : "");
  document.body.dataset.machines = String(machines.size);
  document.body.dataset.fresh = String(fresh);
  document.body.dataset.dynamic = String(dynamicCount);
  document.body.dataset.events = String(eventCount);
}

function flash(uuid, failed) {
  const row = rows.get(uuid);
  if (!row) return;
  row.classList.remove("flash");
  void row.offsetWidth; // restarts the animation
  row.classList.add("flash");
  row.classList.toggle("failed", failed);
}

function logEvent(message) {
  eventCount += 1;
  const item = document.createElement("li");
  const error = message.body?.error ? `: ${message.body.error}` : "";
  item.textContent = `${message.timestamp} ${message.type} ${title(message.body?.uuid)}${error}`;
  item.dataset.type = message.type;
  if (message.type.endsWith("_FAIL")) item.className = "fail";
  const list = el("events");
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function setStatus(state, text) {
  document.body.dataset.state = state;
  el("status").textContent = text;
  el("open").disabled = state === "open" || state === "connecting";
  el("close").disabled = !(state === "open" || state === "connecting");
}

function socketUrl(token, scope, machineList) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ access_token: token });
  if (scope === "subscribed") {
    for (const uuid of machineList) query.append("machine_uuid", uuid);
  }
  return `${scheme}//${location.host}/ws/machines/${scope}?${query}`;
}

function connect() {
  if (socket) socket.close(1000);
  machines.clear();
  eventCount = 0;
  dynamicCount = 0;
  lastDynamic = null;
  el("events").replaceChildren();
  render();

  const token = el("token").value.trim();
  const scope = el("scope").value;
  const machineList = el("machine").value.split(/[\s,]+/).filter(Boolean);
  setStatus("connecting", `Connecting to ${scope}…`);
  const ws = new WebSocket(socketUrl(token, scope, machineList));
  socket = ws;

  ws.onopen = () => {
    if (socket === ws) setStatus("open", `Connected to ${scope}.`);
  };
  ws.onmessage = (event) => {
    if (socket !== ws) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    const lifecycle = apply(message);
    render();
    if (lifecycle) {
      logEvent(message);
      flash(lifecycle, message.type.endsWith("_FAIL"));
      render();
    }
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    const reason = event.reason ? ` ${event.reason}` : "";
    document.body.dataset.closeCode = String(event.code);
    setStatus("closed", `Closed ${event.code}${reason}`);
  };
}

function init() {
  const params = new URLSearchParams(location.search);
  const token = params.get("access_token");
  if (params.get("scope")) el("scope").value = params.get("scope");
  el("machine").value = params.getAll("machine_uuid").join(", ");
  const showMachine = () => {
    el("machine-field").hidden = el("scope").value !== "subscribed";
  };
  el("scope").addEventListener("change", showMachine);
  showMachine();

  el("connect").addEventListener("submit", (event) => {
    event.preventDefault();
    connect();
  });
  el("close").addEventListener("click", () => {
    if (socket) socket.close(1000, "Closed from the live page.");
  });

  if (token) {
    el("token").value = token;
    params.delete("access_token");
    const rest = params.toString();
    history.replaceState(null, "", rest ? `?${rest}` : location.pathname);
    connect();
  }
}

init();
