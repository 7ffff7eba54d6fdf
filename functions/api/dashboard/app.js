// evtrack's dashboard: reads the public API with a read key kept in this tab's sessionStorage.
// Plain DOM code, no build step; every text from the API goes in with textContent, never as HTML.
'use strict';

const KEY = 'evtrack.key';
const LIVE_POLL_MS = 2000;
const LIVE_ROWS = 200;
const $ = (selector, root = document) => root.querySelector(selector);

// ---- the API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `the server answered ${status}`);
    this.status = status;
    this.code = body?.code;
  }
}

async function api(path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
  const init = body === undefined ? { headers } : {
    method: 'POST', headers: { ...headers, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) signOut('That key was not accepted: ' + (answer?.message ?? 'unauthorized'));
    throw new ApiError(response.status, answer);
  }
  return answer;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined && value !== '') search.set(name, value);
  return search.toString();
}

// ---- small DOM helpers --------------------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(...cells) {
  const tr = el('tr');
  for (const cell of cells) tr.append(cell instanceof Node ? wrap(cell) : el('td', cell));
  return tr;
}

function wrap(node) {
  const td = el('td');
  td.append(node);
  return td;
}

// Only the answer to a view's latest question is shown: an earlier one may come back later.
const asked = {};
function ask(view) {
  const question = (asked[view] ?? 0) + 1;
  asked[view] = question;
  return () => asked[view] === question;
}

function showError(view, error) {
  const box = $('.error', view);
  box.hidden = !error;
  box.textContent = error ? error.message : '';
}

const count = new Intl.NumberFormat();
const percent = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });
const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const localTime = (iso) => new Date(iso).toLocaleString();

// ---- the range and the event choices ------------------------------------------------------

function range() {
  const days = Number($('#range').value);
  const to = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000);
  const from = new Date(to.getTime() - days * 86_400_000);
  return { from: from.toISOString(), to: to.toISOString(), days };
}

let catalog = [];
let choices = [];

async function loadCatalog() {
  const { from, to } = range();
  catalog = (await api('/v1/event-names?' + query({ from, to }))).data;
  choices = [{ label: 'Any event', value: { type: 'any' } }].concat(catalog.map((entry) => ({
    label: entry.name ? `${entry.name} (${entry.type})` : `every ${entry.type}`,
    value: entry.name ? { type: entry.type, event: entry.name } : { type: entry.type },
  })));
  for (const select of document.querySelectorAll('select.events')) fillChoices(select);
  renderTopEvents();
  // Promoted properties break a trend down from the rollups: offered first.
  const promoted = (await api('/v1/properties/promoted')).data;
  $('#promoted').replaceChildren(...promoted.map((entry) => {
    const option = el('option');
    option.value = entry.property;
    return option;
  }));
}

function fillChoices(select) {
  const kept = select.value;
  select.replaceChildren(...choices.map((choice) => {
    const option = el('option', choice.label);
    option.value = JSON.stringify(choice.value);
    return option;
  }));
  // A new choice starts on the named event of its position (a funnel's step k on the k-th).
  if ([...select.options].some((option) => option.value === kept)) select.value = kept;
  else if (select.dataset.pick) select.selectedIndex = Math.min(select.options.length - 1, 1 + Number(select.dataset.pick));
}

const chosen = (select) => JSON.parse(select.value || '{"type":"any"}');

function renderTopEvents() {
  $('#top-events tbody').replaceChildren(...catalog.slice(0, 25).map((entry) => {
    const name = el('a', entry.name ?? '(all)');
    name.href = '#trends';
    name.addEventListener('click', () => {
      $('#trend-event').value = JSON.stringify(entry.name ? { type: entry.type, event: entry.name } : { type: entry.type });
      showTrend();
    });
    return row(entry.type, name, count.format(entry.events), localTime(entry.last_seen));
  }));
}

// ---- trends -------------------------------------------------------------------------------

let chart;

async function showTrend() {
  const view = $('#trends');
  const { from, to, days } = range();
  const interval = $('#trend-interval').value;
  const math = $('#trend-math').value;
  const breakdown = $('#trend-breakdown').value.trim();
  const question = { series: [chosen($('#trend-event'))], from, to, interval, timezone: timeZone, math };
  if (interval === 'hour' && days > 30) question.from = new Date(Date.parse(to) - 30 * 86_400_000).toISOString();
  if (breakdown) question.breakdown = { property: breakdown, limit: 8 };
  const latest = ask('trends');
  try {
    const answer = await api('/v1/query/trends', question);
    if (!latest()) return;
    showError(view, null);
    drawTrend(answer);
  } catch (error) {
    if (latest()) showError(view, error);
  }
}

function lineLabel(line) {
  const name = line.event ?? (line.type === 'any' ? 'any event' : `every ${line.type}`);
  if (!line.breakdown) return name;
  if (line.breakdown.kind === 'value') return `${name}: ${line.breakdown.value}`;
  return `${name}: ${line.breakdown.kind}`;
}

const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563', '#65a30d'];

function drawTrend(answer) {
  const times = answer.buckets.map((start) => Date.parse(start) / 1000);
  const lines = answer.series;
  const totals = lines.map((line) => line.total ?? line.values.reduce((sum, value) => sum + value, 0));
  $('#trend-totals tbody').replaceChildren(...lines.map((line, index) => {
    const tr = row(lineLabel(line), count.format(totals[index]));
    tr.dataset.total = String(totals[index]);
    return tr;
  }));
  const source = answer.source ?? {};
  const property = source.property ? ` of ${source.property}` : '';
  // A watermark minutes old: the rollups job is behind (the answer is exact all the same).
  const behind = source.watermark && Date.now() - Date.parse(source.watermark) > 5 * 60_000
    ? ` The rollups hold the changes made before ${new Date(source.watermark).toLocaleString()}; the hours changed since are read raw.`
    : '';
  $('#trend-source').textContent = source.kind === 'rollup'
    ? `From the rollups${property} (${source.rollup_hours} hours) and the raw rows (${source.raw_hours} hours).${behind}`
    : 'From the raw rows.';
  const target = $('#trend-chart');
  chart?.destroy();
  target.replaceChildren();
  const options = {
    width: Math.max(320, target.clientWidth || 800),
    height: 280,
    series: [{}].concat(lines.map((line, index) => ({
      label: lineLabel(line), stroke: PALETTE[index % PALETTE.length], width: 2, points: { show: times.length < 60 },
    }))),
    axes: [{}, { values: (_, ticks) => ticks.map((tick) => count.format(tick)) }],
    scales: { x: { time: true } },
  };
  chart = new uPlot(options, [times].concat(lines.map((line) => line.values)), target);
}

// ---- live tail ----------------------------------------------------------------------------

let liveCursor;
let liveTimer;

let liveAsking = false;

async function pollLive() {
  clearTimeout(liveTimer);
  const view = $('#live');
  // One poll at a time: two with the same cursor would show its events twice.
  if (liveAsking || view.hidden || !sessionStorage.getItem(KEY)) return;
  liveAsking = true;
  try {
    const answer = await api('/v1/events/live?' + query({ cursor: liveCursor, limit: 100 }));
    liveCursor = answer.next_cursor;
    const body = $('#live-events tbody');
    for (const event of answer.data) {
      const page = parseJson(event.context)?.page?.url ?? parseJson(event.properties)?.url ?? '';
      const tr = row(localTime(event.receivedAt), event.type, event.name ?? '', userLink(event.userId ?? event.anonymousId), page);
      tr.dataset.id = event.id;
      body.prepend(tr);
    }
    while (body.rows.length > LIVE_ROWS) body.deleteRow(-1);
    $('#live-state').textContent = `following, ${body.rows.length} shown`;
    showError(view, null);
  } catch (error) {
    showError(view, error);
  } finally {
    liveAsking = false;
  }
  liveTimer = setTimeout(pollLive, LIVE_POLL_MS);
}

function parseJson(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === 'object') return value;
  try { return JSON.parse(value); } catch { return null; }
}

// A link to a view (`#user`, `#group`) showing `id`: typed into the view's input, then shown.
function viewLink(view, id, show) {
  if (!id) return '';
  const link = el('a', id);
  link.href = `#${view}`;
  link.addEventListener('click', () => { $(`#${view}-id`).value = id; setTimeout(show); });
  return link;
}

const userLink = (id) => viewLink('user', id, showUser);

// ---- funnel -------------------------------------------------------------------------------

function addFunnelStep() {
  const steps = $('#funnel-steps');
  if (steps.children.length >= 5) return;
  const label = el('label', `Step ${steps.children.length + 1} `);
  const select = el('select', undefined, 'events');
  select.dataset.pick = String(steps.children.length);
  label.append(select);
  steps.append(label);
  fillChoices(select);
}

async function showFunnel() {
  const view = $('#funnel');
  const { from, to } = range();
  const steps = [...document.querySelectorAll('#funnel-steps select')].map(chosen);
  const latest = ask('funnel');
  try {
    const answer = await api('/v1/query/funnels', { steps, from, to, window_hours: Number($('#funnel-window').value) });
    if (!latest()) return;
    showError(view, null);
    const first = answer.steps[0]?.users || 1;
    $('#funnel-source').textContent = sampleNote(answer.source);
    $('#funnel-result tbody').replaceChildren(...answer.steps.map((step) => {
      const bar = el('div', undefined, 'bar');
      bar.style.width = `${(100 * step.users) / first}%`;
      const tr = row(lineLabel(step), count.format(step.users), percent.format(step.conversion),
        percent.format(step.from_previous), bar);
      tr.dataset.users = String(step.users);
      return tr;
    }));
  } catch (error) {
    if (latest()) showError(view, error);
  }
}

// What a funnel's or retention's answer says of a sample it was read from ('' when exact).
function sampleNote(source) {
  const oneIn = source?.sample?.one_in;
  return oneIn
    ? `Estimated from 1 user in ${count.format(oneIn)} (too many users to read every one): counts are scaled up, rates are the sample's.`
    : '';
}

// ---- retention ----------------------------------------------------------------------------

async function showRetention() {
  const view = $('#retention');
  const interval = $('#retention-interval').value;
  const periods = interval === 'day' ? Math.min(12, range().days) : Math.min(12, Math.ceil(range().days / 7));
  const unit = interval === 'day' ? 86_400_000 : 7 * 86_400_000;
  const from = new Date(Date.now() - (periods - 1) * unit).toISOString();
  const question = {
    from, interval, periods, timezone: timeZone,
    cohort_event: chosen($('#retention-cohort')), return_event: chosen($('#retention-return')),
    cohort_by: $('#retention-cohort-by').value,
  };
  const latest = ask('retention');
  try {
    const answer = await api('/v1/query/retention', question);
    if (!latest()) return;
    showError(view, null);
    const table = $('#retention-result');
    $('#retention-source').textContent = sampleNote(answer.source);
    const head = row('Cohort', 'Users', ...Array.from({ length: periods - 1 }, (_, k) => `+${k + 1}`));
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(...answer.cohorts.map((cohort) => {
      const cells = cohort.returned.slice(1).map((back, k) => {
        const cell = el('span', `${count.format(back)} (${percent.format(cohort.rates[k + 1])})`, 'heat');
        cell.style.backgroundColor = `rgba(37, 99, 235, ${0.08 + 0.6 * cohort.rates[k + 1]})`;
        return cell;
      });
      const tr = row(new Date(cohort.start).toLocaleDateString(), count.format(cohort.users), ...cells);
      tr.dataset.start = cohort.start;
      tr.dataset.returned = JSON.stringify(cohort.returned);
      return tr;
    }));
  } catch (error) {
    if (latest()) showError(view, error);
  }
}

// ---- a user's timeline --------------------------------------------------------------------

async function showUser() {
  const view = $('#user');
  const id = $('#user-id').value.trim();
  if (!id) return;
  const path = `/v1/users/${encodeURIComponent(id)}`;
  const latest = ask('user');
  try {
    const [profile, events, groupsOfUser] = await Promise.all([
      api(path).catch((error) => (error.status === 404 ? null : Promise.reject(error))),
      api(`${path}/events?limit=100`),
      // The groups are an extra: the timeline shows without them.
      api(`${path}/groups?limit=50`).catch(() => ({ data: [] })),
    ]);
    if (!latest()) return;
    showError(view, null);
    const shown = $('#user-profile');
    shown.hidden = !profile;
    shown.textContent = profile ? JSON.stringify(profile, null, 2) : '';
    const groups = $('#user-groups');
    groups.hidden = groupsOfUser.data.length === 0;
    const more = groupsOfUser.next_cursor ? [el('span', '(and more)', 'note')] : [];
    $('span', groups).replaceChildren(...groupsOfUser.data.map(groupLink), ...more);
    $('#user-events tbody').replaceChildren(...events.data.map((event) => {
      const tr = row(localTime(event.timestamp), event.type, event.name ?? '', JSON.stringify(parseJson(event.properties) ?? {}));
      tr.dataset.id = event.id;
      return tr;
    }));
  } catch (error) {
    if (latest()) showError(view, error);
  }
}

// ---- groups ---------------------------------------------------------------------------------

// A link to a group: a group is its type and its id (PostHog's company 42 is not its project
// 42; Segment's groups have the type ""), both typed into the view's inputs, then shown. The
// type is then exact, "" too, until either input is edited.
function groupLink(group) {
  const link = el('a', group.groupType ? `${group.groupId} (${group.groupType})` : group.groupId);
  link.href = '#group';
  link.addEventListener('click', () => {
    $('#group-id').value = group.groupId;
    $('#group-type').value = group.groupType;
    $('#group-type').dataset.exact = 'yes';
    $('#group-type').placeholder = 'none';
    setTimeout(showGroup);
  });
  return link;
}

// The groups whose ids start with what was typed (of the type typed, or any); the one of
// exactly that id with its members, if one group has it (they come first: an id sorts before
// the longer ids it starts).
async function showGroup() {
  const view = $('#group');
  const id = $('#group-id').value.trim();
  const typeInput = $('#group-type');
  const type = typeInput.value.trim() || (typeInput.dataset.exact ? '' : undefined);
  const latest = ask('group');
  $('#group-more').hidden = true;
  try {
    // `query` leaves out an empty value: "" (no type) goes in by hand.
    const typed = (params) => query(params) + (type === '' ? '&type=' : '');
    const list = await api(`/v1/groups?${typed({ prefix: id, type, limit: 100 })}`);
    const matching = list.data.filter((one) => one.groupId === id);
    const group = matching.length === 1 ? matching[0] : null;
    const members = group
      ? await api(`/v1/groups/${encodeURIComponent(id)}/members?${query({ limit: 200 })}&type=${encodeURIComponent(group.groupType)}`)
      : null;
    if (!latest()) return;
    showError(view, null);
    $('#group-list').hidden = Boolean(group);
    $('#group-list tbody').replaceChildren(...list.data.map((one) =>
      row(groupLink(one), one.groupType, JSON.stringify(parseJson(one.traits) ?? {}))));
    $('#group-profile').hidden = !group;
    $('#group-profile').textContent = group ? JSON.stringify(group, null, 2) : '';
    $('#group-members').hidden = !members;
    $('#group-members tbody').replaceChildren(...(members?.data ?? []).map((member) =>
      row(userLink(member.memberId), localTime(member.addedAt))));
    $('#group-more').hidden = !(members ?? list).next_cursor;
  } catch (error) {
    if (latest()) showError(view, error);
  }
}

// ---- views and session ----------------------------------------------------------------------

const VIEWS = {
  trends: showTrend, live: pollLive, funnel: showFunnel, retention: showRetention, user: showUser, group: showGroup,
};

function route() {
  const signedIn = Boolean(sessionStorage.getItem(KEY));
  $('#login').hidden = signedIn;
  $('#nav').hidden = !signedIn;
  $('#session').hidden = !signedIn;
  const name = signedIn ? (location.hash.slice(1) in VIEWS ? location.hash.slice(1) : 'trends') : null;
  for (const view of document.querySelectorAll('.view')) view.hidden = view.id !== name;
  for (const link of document.querySelectorAll('#nav a')) link.classList.toggle('current', link.hash === `#${name}`);
  if (name) VIEWS[name]();
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  liveCursor = undefined;
  $('#live-events tbody').replaceChildren();
  const box = $('#login-error');
  box.hidden = !message;
  box.textContent = message ?? '';
  route();
}

async function signIn(event) {
  event.preventDefault();
  const key = $('#key').value.trim();
  if (!/^evt[rwa]_/.test(key)) {
    signOut('That is not an evtrack key: a read key starts with evtr_.');
    return;
  }
  if (key.startsWith('evtw_')) {
    signOut('That is a write key, which can only send events: sign in with a read key (evtr_…).');
    return;
  }
  if (key.startsWith('evta_')) {
    signOut('That is an admin key, which has no project of its own and should not sit in a browser: sign in with a read key (evtr_…).');
    return;
  }
  sessionStorage.setItem(KEY, key);
  try {
    await loadCatalog();
  } catch (error) {
    if (sessionStorage.getItem(KEY)) signOut(`Signing in failed: ${error.message}`);
    return;
  }
  $('#key').value = '';
  $('#login-error').hidden = true;
  route();
}

document.addEventListener('DOMContentLoaded', () => {
  for (const id of ['#trend-event', '#retention-cohort', '#retention-return']) $(id).classList.add('events');
  $('#trend-event').dataset.pick = '0';
  addFunnelStep();
  addFunnelStep();
  $('#login-form').addEventListener('submit', signIn);
  $('#sign-out').addEventListener('click', () => signOut());
  $('#range').addEventListener('change', () => loadCatalog().then(route).catch(() => {}));
  for (const id of ['#trend-event', '#trend-math', '#trend-interval', '#trend-breakdown']) $(id).addEventListener('change', showTrend);
  for (const id of ['#retention-cohort', '#retention-cohort-by', '#retention-return', '#retention-interval']) $(id).addEventListener('change', showRetention);
  $('#funnel-add').addEventListener('click', addFunnelStep);
  $('#funnel-run').addEventListener('click', showFunnel);
  $('#user-form').addEventListener('submit', (event) => { event.preventDefault(); showUser(); });
  $('#group-form').addEventListener('submit', (event) => { event.preventDefault(); showGroup(); });
  // A type typed by hand, or another id, is no longer a link's exact group.
  for (const input of ['#group-id', '#group-type']) {
    $(input).addEventListener('input', () => {
      delete $('#group-type').dataset.exact;
      $('#group-type').placeholder = 'any';
    });
  }
  window.addEventListener('hashchange', route);
  if (sessionStorage.getItem(KEY)) loadCatalog().then(route, () => {});
  else route();
});
