/* The Agents Trading Arena web page. Live: fills itself from the server's pushes (/events, server-sent
   events: one "full" picture, then "delta"s). Report: from window.ARENA_STATIC, no network at all. */
(function () {
  "use strict";
  var STATIC = window.ARENA_STATIC || null;
  var PALETTE = ["#5fafff", "#ffaf5f", "#d787ff", "#87d75f", "#ff87af", "#5fd7d7", "#ffd75f", "#e6edf3", "#d7af87", "#87ffd7"];
  var BASELINE = "buy-and-hold (baseline)";
  var MAX_TRADES = 300, MAX_TURNS_SHOWN = 80;

  var S = {
    board: null, samples: [], sampleKeys: {}, trades: [], tradeCount: 0, turns: {}, turnCounts: {}, market: null,
    health: null, agents: [], offsetMs: 0, connected: false, everConnected: false, filter: "", older: {}, seenTrades: {}
  };
  var colors = {}, colorCount = 0;

  // -- formatting ---------------------------------------------------------------------------------
  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function num(v) { return typeof v === "number" && isFinite(v); }
  function money(v, cents) {
    if (!num(v)) return "—";
    var d = cents === false ? 0 : 2;
    if (Math.abs(v) < 0.5 * Math.pow(10, -d)) v = 0;  // no "-$0.00"
    var s = Math.abs(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
    return (v < 0 ? "-$" : "$") + s;
  }
  function signedMoney(v) { return !num(v) ? "—" : (v >= 0.005 ? "+" : "") + money(v); }
  function pct(v, digits) { return !num(v) ? "—" : v.toFixed(digits == null ? 2 : digits) + "%"; }
  function signedPct(v) { return !num(v) ? "—" : (v > 0 ? "+" : "") + v.toFixed(3) + "%"; }
  function price(v) {
    if (!num(v)) return "—";
    if (v >= 1000) return v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    if (v >= 1) return v.toFixed(4);
    return v.toPrecision(6);
  }
  function qty(v) { return !num(v) ? "—" : (Math.abs(v) >= 1000 ? v.toLocaleString("en-US", { maximumFractionDigits: 4 }) : String(+v.toPrecision(7))); }
  function cls(v) { return !num(v) || Math.abs(v) < 1e-9 ? "" : v > 0 ? "up" : "down"; }
  function nowMs() { return Date.now() + S.offsetMs; }
  function ago(seconds) {
    if (!num(seconds)) return "—";
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }
  function hms(iso) { if (!iso) return "—"; var d = new Date(iso); return isNaN(d) ? "—" : d.toISOString().slice(11, 19); }
  function since(iso) { return iso ? (nowMs() - Date.parse(iso)) / 1000 : null; }
  var CRC = (function () {
    var t = [];
    for (var n = 0; n < 256; n++) { var c = n; for (var k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; t.push(c >>> 0); }
    return t;
  })();
  function crc32(s) {
    var bytes = unescape(encodeURIComponent(s)), c = 0xffffffff;
    for (var i = 0; i < bytes.length; i++) c = CRC[(c ^ bytes.charCodeAt(i)) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }
  var usedSlots = {};
  function color(name) {
    // Like the terminal (arena.ui.agent_color): a slot from the name's CRC-32, the next free one on a clash.
    if (name === BASELINE) return "#8b949e";
    if (!colors[name]) {
      var n = PALETTE.length, start = crc32(name) % n, slot = -1;
      for (var i = 0; i < n; i++) if (!usedSlots[(start + i) % n]) { slot = (start + i) % n; break; }
      if (slot >= 0) { usedSlots[slot] = 1; colors[name] = PALETTE[slot]; }
      else colors[name] = "hsl(" + Math.round(colorCount * 137.508) % 360 + ",70%,66%)";
      colorCount++;
    }
    return colors[name];
  }
  function agentCell(name) {
    var label = name === BASELINE ? "buy-and-hold" : name;  // the rank column says "base"
    return '<span class="swatch" style="background:' + color(name) + '"></span><span class="agent" title="' + esc(name) + '">' + esc(label) + "</span>";
  }
  function $(id) { return document.getElementById(id); }

  // -- state --------------------------------------------------------------------------------------
  function turnKey(t) { return t.agent + "\u0000" + t.run_id; }
  function addSamples(list) {
    (list || []).forEach(function (s) {
      if (S.sampleKeys[s.t]) return;
      S.sampleKeys[s.t] = 1;
      S.samples.push(s);
    });
    S.samples.sort(function (a, b) { return a.t < b.t ? -1 : a.t > b.t ? 1 : 0; });
  }
  function apply(d, full) {
    if (d.now) S.offsetMs = Date.parse(d.now) - Date.now();
    if (full) {
      S.samples = []; S.sampleKeys = {}; S.trades = []; S.turns = {}; S.older = {};
    }
    if ("board" in d && (d.board || full)) S.board = d.board;
    if (d.samples) addSamples(d.samples);
    if (d.trades) {
      S.trades = S.trades.concat(d.trades);
      if (S.trades.length > MAX_TRADES) S.trades = S.trades.slice(-MAX_TRADES);
    }
    if ("trade_count" in d) S.tradeCount = d.trade_count;
    (d.turns || []).forEach(function (t) { S.turns[turnKey(t)] = t; });
    if (d.turn_counts) S.turnCounts = d.turn_counts;
    if (d.market) S.market = d.market;
    if (d.health) S.health = d.health;
    if (d.agents) S.agents = d.agents;
    if (d.board) (d.board.agents || []).forEach(function (a) { color(a.name); });
    (S.agents || []).forEach(color);
    schedule({ board: !!(d.board || full), chart: !!(d.samples || d.board || full), trades: !!(d.trades || full), chat: !!(d.turns || full) });
  }

  // -- rendering ----------------------------------------------------------------------------------
  var pending = null;
  function schedule(parts) {
    if (!pending) {
      pending = {};
      requestAnimationFrame(function () { var p = pending; pending = null; render(p); });
    }
    for (var k in parts) if (parts[k]) pending[k] = true;
  }
  function render(p) {
    renderHeader();
    if (p.board) { renderBoard(); renderPositions(); }
    if (p.chart) renderChart();
    if (p.trades) renderTrades();
    if (p.chat) { renderFilter(); renderChat(); }
    if (!STATIC) { renderMarket(); renderProcs(); }
    document.body.setAttribute("data-rendered", "1");
  }

  var COLS = [
    { k: "rank", h: "#", f: function (a) { return a.baseline ? "base" : a.rank; }, v: function (a) { return a.rank; } },
    { k: "name", h: "Agent", l: true },
    { k: "total_value", h: "Value", f: function (a) { return money(a.total_value); } },
    { k: "return_pct", h: "Return", f: function (a) { return signedPct(a.return_pct); }, c: function (a) { return cls(a.return_pct); } },
    { k: "cash", h: "Cash", f: function (a) { return money(a.cash); } },
    { k: "realized_pnl", h: "Realized", f: function (a) { return signedMoney(a.realized_pnl); }, c: function (a) { return cls(a.realized_pnl); } },
    { k: "unrealized_pnl", h: "Unrealized", f: function (a) { return signedMoney(a.unrealized_pnl); }, c: function (a) { return cls(a.unrealized_pnl); } },
    { k: "fees", h: "Fees", f: function (a) { return money(a.fees); } },
    { k: "trades", h: "Fills", f: function (a) { return a.trades; } },
    { k: "rejected", h: "Rejected", f: function (a) { return a.rejected; }, c: function (a) { return a.rejected ? "down" : ""; } },
    { k: "model_errors", h: "Model err", f: function (a) { return a.baseline ? "" : a.model_errors || 0; }, c: function (a) { return a.model_errors ? "down" : ""; } },
    { k: "max_drawdown_pct", h: "Max DD", m: true, f: function (a, v) { return num(v) ? pct(-v) : "—"; }, c: function (a, v) { return num(v) && v > 0.005 ? "down" : ""; } },
    { k: "win_rate", h: "Win rate", m: true, f: function (a, v) { return num(v) ? v.toFixed(0) + "% of " + (a.metrics.round_trips || 0) : "—"; } },
    { k: "sharpe", h: "Sharpe", m: true, f: function (a, v) { return num(v) ? v.toFixed(2) : "—"; } },
    { k: "exposure_pct", h: "Exposure", m: true, f: function (a, v) { return num(v) ? v.toFixed(0) + "%" : "—"; } },
    { k: "turns", h: "Turns", f: function (a) { return a.baseline ? "" : a.turns || 0; } },
    { k: "tokens", h: "Tokens", opt: true, f: function (a) { return num(a.tokens) ? a.tokens.toLocaleString("en-US") : "—"; } },
    { k: "model_cost_usd", h: "Model $", opt: true, f: function (a) { return !num(a.model_cost_usd) ? "—" : a.model_cost_usd < 1 ? "$" + a.model_cost_usd.toFixed(4) : money(a.model_cost_usd); } },
    { k: "return_per_dollar", h: "P&L/$", opt: true, f: function (a) { var v = a.return_per_dollar; return !num(v) ? "—" : (v > 0 ? "+" : "") + (Math.abs(v) >= 10 ? Math.round(v).toLocaleString("en-US") : v.toFixed(2)); }, c: function (a) { return cls(a.return_per_dollar); } },
    { k: "last_reply_at", h: "Last reply", f: function (a) { return a.baseline ? "" : !a.last_reply_at ? "—" : STATIC ? hms(a.last_reply_at) : ago(since(a.last_reply_at)) + " ago"; } }
  ];
  function metricOf(a, c) { return c.m ? (a.metrics || {})[c.k] : a[c.k]; }

  function renderBoard() {
    var b = S.board, table = $("board");
    var agents = b ? b.agents || [] : [];
    table.setAttribute("data-generated-at", b && b.generated_at || "");
    var cols = COLS.filter(function (c) { return !c.opt || agents.some(function (a) { return c.k in a; }); });
    if (STATIC) cols = cols.filter(function (c) { return ["last_reply_at", "turns", "model_errors"].indexOf(c.k) < 0 || agents.some(function (a) { return a[c.k]; }); });
    table.tHead.innerHTML = "<tr>" + cols.map(function (c) { return '<th class="' + (c.l ? "l name" : "") + '">' + c.h + "</th>"; }).join("") + "</tr>";
    if (!agents.length) {
      table.tBodies[0].innerHTML = '<tr><td class="l empty" colspan="' + cols.length + '">' +
        (b ? "no agents yet: each appears with its starting cash on its first tool call" : "waiting for the tools process's leaderboard …") + "</td></tr>";
    } else {
      table.tBodies[0].innerHTML = agents.map(function (a) {
        return '<tr data-agent="' + esc(a.name) + '" class="' + (a.baseline ? "baseline" : "") + '">' + cols.map(function (c) {
          var v = metricOf(a, c);
          if (c.k === "name") return '<td class="l name">' + agentCell(a.name) + "</td>";
          var css = c.c ? c.c(a, v) : "";
          var raw = num(v) ? ' data-v="' + v + '"' : "";
          return '<td data-k="' + c.k + '"' + raw + ' class="' + css + '">' + esc(c.f(a, v)) + "</td>";
        }).join("") + "</tr>";
      }).join("");
    }
    if (b) {
      $("board-note").textContent = "start " + money(b.starting_cash, false) + " each · positions marked at " + (b.positions_marked_at || "best bid") +
        " · fee " + b.fee_bps + " bps" + (STATIC ? "" : " · updated " + hms(b.generated_at) + " UTC");
    }
  }

  function renderPositions() {
    var rows = [];
    ((S.board || {}).agents || []).forEach(function (a) {
      if (a.baseline) return;
      (a.positions || []).forEach(function (p) { rows.push([a, p]); });
    });
    var body = $("positions").tBodies[0];
    if (!rows.length) { body.innerHTML = '<tr><td class="l empty" colspan="6">no open positions (all cash)</td></tr>'; return; }
    body.innerHTML = rows.map(function (r) {
      var a = r[0], p = r[1];
      return '<tr data-agent="' + esc(a.name) + '" data-product="' + esc(p.product_id) + '"><td class="l">' + agentCell(a.name) + '</td><td class="l">' + esc(p.product_id) +
        '</td><td data-k="quantity" data-v="' + p.quantity + '">' + qty(p.quantity) + "</td><td>" + price(p.avg_cost) +
        '</td><td data-k="market_value" data-v="' + p.market_value + '">' + money(p.market_value) + '</td><td class="' + cls(p.unrealized_pnl) + '">' + signedMoney(p.unrealized_pnl) + "</td></tr>";
    }).join("");
  }

  function tradeRow(t, fresh) {
    var filled = t.status === "filled";
    var result = filled
      ? '<td class="l muted">filled' + (num(t.latency_ms) ? " · " + t.latency_ms.toFixed(0) + " ms" : "") + "</td>"
      : '<td class="reason"><span class="tag rej">REJECTED</span> ' + esc(t.reason || "no reason given") + "</td>";
    return '<tr data-trade-id="' + esc(t.trade_id) + '" data-status="' + t.status + '" class="' + (fresh ? "fresh" : "") + '"><td class="l">' + hms(t.executed_at) +
      '</td><td class="l">' + agentCell(t.agent) + '</td><td class="l"><span class="tag ' + (t.side === "buy" ? "buy" : "sell") + '">' + esc(String(t.side).toUpperCase()) +
      '</span></td><td data-k="quantity" data-v="' + t.quantity + '">' + qty(t.quantity) + '</td><td class="l">' + esc(t.product_id.slice(0, 40)) +
      '</td><td data-k="price" data-v="' + (filled ? t.price : "") + '">' + (filled ? price(t.price) : "—") + "</td><td>" + (filled ? money(t.fee) : "—") + "</td>" + result + "</tr>";
  }
  var tradesRendered = false;
  function renderTrades() {
    var list = S.trades.slice().reverse().slice(0, STATIC ? 100000 : 200);
    var body = $("trades").tBodies[0];
    if (!list.length) body.innerHTML = '<tr><td class="l empty" colspan="8">no trades yet</td></tr>';
    else body.innerHTML = list.map(function (t) {
      var key = t.agent + "\u0000" + t.trade_id, fresh = tradesRendered && !S.seenTrades[key];
      S.seenTrades[key] = 1;
      return tradeRow(t, fresh);
    }).join("");
    tradesRendered = true;
    var fills = S.trades.filter(function (t) { return t.status === "filled"; }).length;
    var shown = STATIC ? S.trades.length : Math.min(S.trades.length, 200);
    $("trades-note").textContent = "newest first · " + (S.tradeCount || S.trades.length) + " in the run" +
      (shown < (S.tradeCount || S.trades.length) ? ", latest " + shown + " shown (all: /api/trades)" : "") + (STATIC ? " · " + fills + " fills" : "");
  }

  function renderMarket() {
    var m = S.market, body = $("market").tBodies[0];
    if (!m || !Object.keys(m.products || {}).length) {
      body.innerHTML = '<tr><td class="l empty" colspan="6">no market data yet</td></tr>';
    } else {
      body.innerHTML = Object.keys(m.products).map(function (pid) {
        var q = m.products[pid], age = since(q.received_at);
        var stale = q.stale || age > m.max_quote_age_s;
        return '<tr data-product="' + esc(pid) + '"><td class="l"><b>' + esc(pid) + "</b>" + (stale ? '<span class="stale">STALE</span>' : "") +
          '</td><td data-k="price" data-v="' + q.price + '">' + price(q.price) + "</td><td>" + price(q.bid) + "</td><td>" + price(q.ask) + "</td><td>" + price(q.spread) +
          '</td><td class="' + (stale ? "down" : "") + '">' + ago(age) + "</td></tr>";
      }).join("");
    }
    var f = m && m.feed;
    $("market-note").textContent = f && f.snapshot_seq != null ? "snapshot #" + f.snapshot_seq + " · " + ago(since(f.published_at)) + " ago · STALE after " + ago(m.max_quote_age_s) : "";
  }

  function renderProcs() {
    var h = S.health, box = $("procs");
    var procs = (h && h.processes) || [];
    if (!procs.length) { box.innerHTML = '<div class="empty">no supervisor reports (processes started by hand report nothing)</div>'; return; }
    box.innerHTML = procs.map(function (p) {
      var state = p.status === "exited" ? "bad" : p.status === "ready" ? "ok" : "idle";
      return '<span class="proc ' + state + '" title="' + esc(p.detail || "") + '"><span class="dot"></span>' + esc(p.name) + " · " + esc(p.status) +
        (p.status === "exited" ? " (" + esc((p.detail || "").split(",")[0]) + ")" : "") + "</span>";
    }).join("");
  }

  function level() {
    // The worst of: our own view of the feed, the tools process's view (while it publishes), the page's connection.
    if (STATIC) return { level: "report", problems: [] };
    if (!S.connected) return { level: "disconnected", problems: [S.everConnected ? "lost the web server: reconnecting …" : "connecting to the web server …"] };
    var h = S.health || {}, f = h.feed || { status: "waiting", problems: [] };
    var order = { ok: 0, waiting: 1, degraded: 2, down: 3 };
    var lvl = f.status, problems = (f.problems || []).slice();
    var tools = h.tools || {};
    if (tools.status === "silent") { problems.push("tools process silent for " + ago(tools.last_leaderboard_age_s) + " (leaderboard not updating)"); if (order[lvl] < 2) lvl = "degraded"; }
    if (tools.status === "ok" && S.board && S.board.feed) {
      (S.board.feed.problems || []).forEach(function (p) {
        if (/^(feed silent|all quotes stale|stale |no market data)/.test(p)) return;  // ours is said above, from the topic itself
        if (problems.indexOf(p) < 0) problems.push(p);
      });
      if (problems.length && lvl === "ok") lvl = "degraded";
    }
    (h.processes || []).forEach(function (p) {
      var text = p.name + " exited (" + (p.detail || "").split(",")[0] + ")";
      if (p.status === "exited" && problems.indexOf(text) < 0) { problems.push(text); if (lvl === "ok") lvl = "degraded"; }
    });
    return { level: lvl, problems: problems };
  }

  function renderHeader() {
    var l = level(), pill = $("pill");
    var label = { ok: "● LIVE", degraded: "● DEGRADED", down: "● FEED DOWN", waiting: "○ WAITING", disconnected: "● DISCONNECTED", report: "REPORT" }[l.level] || l.level;
    pill.className = "pill " + l.level;
    pill.textContent = label;
    var pr = $("problems");
    pr.textContent = l.problems.join(" · ");
    pr.className = "problems" + (l.level === "degraded" ? " degraded" : "");
    var b = S.board, facts = [];
    if (STATIC) {
      facts.push("<span>" + esc(STATIC.source || "") + "</span>");
      if (b && b.generated_at) facts.push("<span>generated <b>" + esc(b.generated_at.slice(0, 19).replace("T", " ")) + "</b> UTC</span>");
    } else {
      facts.push("<span><b>" + new Date(nowMs()).toISOString().slice(11, 19) + "</b> UTC</span>");
      var f = S.health && S.health.feed;
      if (f && f.snapshot_seq != null) facts.push("<span>feed <b>" + ago(since(f.published_at)) + "</b> ago #" + f.snapshot_seq + "</span>");
    }
    if (b) {
      var ag = (b.agents || []).filter(function (a) { return !a.baseline; });
      var sum = function (k) { return ag.reduce(function (s, a) { return s + (a[k] || 0); }, 0); };
      facts.push("<span><b>" + ag.length + "</b> agents · <b>" + sum("trades") + "</b> fills · <b class=\"" + (sum("rejected") ? "down" : "") + "\">" + sum("rejected") +
        "</b> rejected · <b class=\"" + (sum("model_errors") ? "down" : "") + "\">" + sum("model_errors") + "</b> model errors</span>");
      facts.push("<span>start " + money(b.starting_cash, false) + " · fee " + b.fee_bps + " bps</span>");
    }
    $("facts").innerHTML = facts.join("");
    if (!STATIC) {
      var h = S.health || {};
      $("foot").textContent = "JSON: /api/leaderboard · /api/trades · /api/positions · /api/decisions?agent= · /api/equity · /api/market · /api/health" +
        (h.records != null ? " · " + h.records + " records read" + (h.skipped_records ? ", " + h.skipped_records + " malformed skipped" : "") : "");
    } else {
      $("foot").textContent = (STATIC.notes || []).join(" · ");
    }
  }

  // -- equity chart -------------------------------------------------------------------------------
  var plot = null, plotNames = "";
  function chartData() {
    var names = [], seen = {};
    var b = S.board;
    ((b && b.agents) || []).forEach(function (a) { if (!seen[a.name]) { seen[a.name] = 1; names.push(a.name); } });
    S.samples.forEach(function (s) { for (var n in s.values) if (!seen[n]) { seen[n] = 1; names.push(n); } });
    names.sort(function (x, y) { return (x === BASELINE) - (y === BASELINE); });
    var xs = [], cols = names.map(function () { return []; });
    S.samples.forEach(function (s) {
      xs.push(Date.parse(s.t) / 1000);
      names.forEach(function (n, i) { var v = s.values[n]; cols[i].push(num(v) ? v : null); });
    });
    if (b && b.generated_at) {  // the curve ends at the leaderboard's number
      var t = Date.parse(b.generated_at) / 1000;
      if (!xs.length || t > xs[xs.length - 1]) {
        xs.push(t);
        names.forEach(function (n, i) {
          var a = (b.agents || []).filter(function (x) { return x.name === n; })[0];
          cols[i].push(a && num(a.total_value) ? a.total_value : null);
        });
      }
    }
    return { names: names, data: [xs].concat(cols) };
  }
  function chartSize() {
    var box = $("chart"), w = Math.max(280, box.clientWidth - 12);
    return { width: w, height: window.innerWidth < 700 ? 260 : 340 };
  }
  function axisMoney(u, splits, axisIdx, space, incr) {
    // As many digits as the tick spacing needs: $100.1k apart by hundreds, $100,012 apart by dollars.
    return splits.map(function (v) {
      if (incr >= 100 && Math.abs(v) >= 1e4) return "$" + (v / 1e3).toFixed(incr >= 1000 ? 0 : 1) + "k";
      return "$" + v.toLocaleString("en-US", { minimumFractionDigits: incr < 1 ? 2 : 0, maximumFractionDigits: incr < 1 ? 2 : 0 });
    });
  }
  function renderChart() {
    var cd = chartData(), box = $("chart");
    if (typeof uPlot === "undefined") { box.innerHTML = '<div class="empty">chart library missing</div>'; return; }
    if (cd.data[0].length < 1) {
      if (plot) { plot.destroy(); plot = null; plotNames = ""; }
      box.innerHTML = '<div class="empty">no value samples yet: the curves start with the first agent\'s first call</div>';
      return;
    }
    var key = cd.names.join("\u0000");
    if (plot && key === plotNames) { plot.setData(cd.data); if (plot.cursor.idx == null) latestLegend(plot); return; }
    if (plot) plot.destroy();
    box.innerHTML = "";
    plotNames = key;
    var axis = { stroke: "#9aa7b4", grid: { stroke: "#2d3640", width: 1 }, ticks: { stroke: "#2d3640", width: 1 }, font: "12px system-ui, sans-serif" };
    var opts = {
      width: chartSize().width, height: chartSize().height,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      scales: { x: { time: true } },
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      axes: [Object.assign({}, axis, { values: timeLabels, space: 80 }), Object.assign({}, axis, { size: 78, values: axisMoney })],
      series: [{ label: "UTC", value: function (u, v) { return v == null ? "—" : new Date(v * 1e3).toISOString().slice(11, 19); } }].concat(cd.names.map(function (n) {
        return { label: n === BASELINE ? "buy-and-hold" : n, stroke: color(n), width: n === BASELINE ? 1.5 : 2, dash: n === BASELINE ? [6, 4] : undefined,
                 spanGaps: true, points: { show: false }, value: function (u, v) { return v == null ? "—" : money(v); } };
      }))
    };
    opts.hooks = { setCursor: [function (u) { if (u.cursor.idx == null) latestLegend(u); }] };
    plot = new uPlot(opts, cd.data, box);
    latestLegend(plot);
  }
  function latestLegend(u) {
    // With no cursor on the chart the legend shows each curve's latest value, not dashes.
    var n = u.data[0].length;
    if (n) u.setLegend({ idx: n - 1 });
  }
  function timeLabels(u, splits) {
    var span = u.scales.x.max - u.scales.x.min;
    return splits.map(function (ts) { var iso = new Date(ts * 1e3).toISOString(); return span > 2 * 86400 ? iso.slice(5, 10) + " " + iso.slice(11, 16) : span > 600 ? iso.slice(11, 16) : iso.slice(11, 19); });
  }
  window.addEventListener("resize", function () { if (plot) plot.setSize(chartSize()); });

  // -- model chat ---------------------------------------------------------------------------------
  function renderFilter() {
    var sel = $("agent-filter"), names = S.agents.slice();
    Object.keys(S.turns).forEach(function (k) { var a = S.turns[k].agent; if (names.indexOf(a) < 0) names.push(a); });
    var want = [""].concat(names).join("\u0000");
    if (sel.getAttribute("data-names") === want) return;
    sel.setAttribute("data-names", want);
    sel.innerHTML = '<option value="">all agents</option>' + names.map(function (n) {
      return '<option value="' + esc(n) + '"' + (n === S.filter ? " selected" : "") + ">" + esc(n) + (S.turnCounts[n] ? " (" + S.turnCounts[n] + " turns)" : "") + "</option>";
    }).join("");
  }
  function outcome(t) {
    var lat = num(t.latency_s) ? t.latency_s.toFixed(2) + "s" : "";
    if (t.status === "done") return '<span class="outcome up">✓ done' + (lat ? " in " + lat : "") + "</span>";
    if (t.status === "error") return '<span class="outcome down">✗ model error' + (lat ? " after " + lat : "") + "</span>";
    if (t.status === "timeout") return '<span class="outcome down">✗ timed out' + (lat ? " after " + lat : "") + "</span>";
    return '<span class="outcome muted">thinking …</span>';
  }
  function stepHtml(s) {
    if (s.kind === "text") return '<div class="step text">' + esc(s.text) + "</div>";
    if (s.kind === "thinking") return '<div class="step thinking">' + esc(s.text) + "</div>";
    if (s.kind === "refused") return '<div class="step refused">✗ ' + esc(s.tool || "call") + " refused: " + esc(s.text) + "</div>";
    if (s.kind === "call" || s.kind === "orphan-result") {
      var sig = s.kind === "call" ? '<div class="sig">→ ' + esc(s.tool) + "(" + esc(s.summary) + ")</div>" : '<div class="sig">' + esc(s.tool) + "</div>";
      var res = s.result == null
        ? '<div class="res pending">… waiting for the result</div>'
        : '<div class="res ' + (s.failed ? "failed" : "ok") + '">' + (s.failed ? "✗ " : "← ") + esc(s.result_summary) + "</div>";
      var raw = (s.args && s.kind === "call" ? "<pre>" + esc(s.args) + "</pre>" : "") + (s.result != null ? "<pre>" + esc(s.result) + "</pre>" : "");
      return '<div class="step call" data-tool="' + esc(s.tool) + '">' + sig + res + (raw ? "<details><summary>arguments and result</summary>" + raw + "</details>" : "") + "</div>";
    }
    return "";
  }
  function turnHtml(t) {
    var head = '<div class="turn-head">' + agentCell(t.agent) + '<span class="when">' + hms(t.started_at) + (t.tick_seq != null ? " · tick #" + t.tick_seq : "") + "</span>" +
      (t.strategy || t.chat_node ? '<span class="muted">' + esc([t.strategy, t.chat_node].filter(Boolean).join(" · ")) + "</span>" : "") + outcome(t) + "</div>";
    var snap = t.summary ? '<div class="snap">saw ' + esc(t.summary) + (t.skipped_before ? " (" + t.skipped_before + " older tick" + (t.skipped_before > 1 ? "s" : "") + " skipped)" : "") + "</div>" : "";
    var steps = (t.steps || []).map(stepHtml).join("");
    var end = t.status === "done" && t.output ? '<div class="final">' + esc(t.output) + "</div>" : (t.status === "error" || t.status === "timeout") ? '<div class="error">' + esc(t.reason || t.status) + "</div>" : "";
    return '<article class="turn" data-agent="' + esc(t.agent) + '" data-run="' + esc(t.run_id) + '" data-status="' + esc(t.status) + '">' + head + snap + steps + end + "</article>";
  }
  function renderChat() {
    var box = $("chat");
    var list = Object.keys(S.turns).map(function (k) { return S.turns[k]; })
      .filter(function (t) { return !S.filter || t.agent === S.filter; })
      .sort(function (a, b) { return a.started_at < b.started_at ? 1 : a.started_at > b.started_at ? -1 : 0; });
    var shown = list.slice(0, S.filter ? 1000 : MAX_TURNS_SHOWN);
    if (!shown.length) { box.innerHTML = '<div class="empty">no model turns yet' + (S.filter ? " for " + esc(S.filter) : "") + "</div>"; return; }
    var total = S.filter ? S.turnCounts[S.filter] || list.length : Object.keys(S.turnCounts).reduce(function (s, a) { return s + S.turnCounts[a]; }, 0);
    var more = S.filter && list.length < total && !S.older[S.filter] ? '<button class="more" id="older">load older turns of ' + esc(S.filter) + "</button>" : "";
    var note = !S.filter && total > shown.length ? '<div class="empty">latest ' + shown.length + " of " + total + " turns; pick an agent to see all of its turns</div>" : "";
    var open = {};
    box.querySelectorAll("details[open]").forEach(function (d) { var a = d.closest(".turn"); if (a) open[a.getAttribute("data-run")] = 1; });
    box.innerHTML = shown.map(turnHtml).join("") + note + more;
    if (Object.keys(open).length) box.querySelectorAll(".turn").forEach(function (a) {
      if (open[a.getAttribute("data-run")]) a.querySelectorAll("details").forEach(function (d) { d.open = true; });
    });
    var btn = $("older");
    if (btn) btn.onclick = loadOlder;
  }
  function loadOlder() {
    var agent = S.filter;
    fetch("api/decisions?agent=" + encodeURIComponent(agent)).then(function (r) { return r.json(); }).then(function (d) {
      (d.turns || []).forEach(function (t) { var k = turnKey(t); if (!S.turns[k]) S.turns[k] = t; });
      S.older[agent] = 1;
      renderChat();
    });
  }
  $("agent-filter").addEventListener("change", function (e) { S.filter = e.target.value; renderChat(); });

  // -- start --------------------------------------------------------------------------------------
  if (STATIC) {
    S.board = STATIC.board;
    addSamples(STATIC.samples || []);
    S.trades = STATIC.trades || [];
    S.tradeCount = S.trades.length;
    (S.board && S.board.agents || []).forEach(function (a) { color(a.name); });
    render({ board: true, chart: true, trades: true });
    if (!S.trades.length) $("trades").tBodies[0].innerHTML = '<tr><td class="l empty" colspan="8">' + esc(STATIC.trades_note || "no trades in this run") + "</td></tr>";
    return;
  }
  function connect() {
    var es = new EventSource("events");
    es.onopen = function () { S.connected = true; S.everConnected = true; schedule({}); };
    es.addEventListener("full", function (e) { S.connected = true; apply(JSON.parse(e.data), true); });
    es.addEventListener("delta", function (e) { apply(JSON.parse(e.data), false); });
    es.onerror = function () { S.connected = false; schedule({}); };
  }
  connect();
  setInterval(function () { schedule({}); }, 1000);  // ages move with the clock between pushes
})();
