/* speedup-proxy dashboard: polls /v1/speedup/stats and draws tiles, uPlot charts and a table. */
(function () {
  "use strict";

  var REFRESH_MS = 5000;
  var COLORS = { reuse: "#0f9d58", guided: "#3b82f6", cold: "#9ca3af", spent: "#ef4444", p50: "#0f9d58",
                 p90: "#f59e0b", p99: "#ef4444", proxy: "#6366f1", memory: "#3b82f6" };
  var params = new URLSearchParams(window.location.search);
  var key = params.get("key") || "";
  var charts = {};
  var memoryTenants = "";
  var tierCounts = [null, [], [], []];
  var timer = null;

  function $(id) { return document.getElementById(id); }
  function byTestId(id) { return document.querySelector('[data-testid="' + id + '"]'); }

  // -- formatting (the test reads these back: keep them simple and deterministic) -----------------
  function fmtInt(v) { return v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"); }
  function fmtRate(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"; }
  function fmtSeconds(v) { return v === null || v === undefined ? "–" : v.toFixed(2) + " s"; }
  function fmtLatency(v) {
    if (v === null || v === undefined) return "–";
    return v < 1 ? (v * 1000).toFixed(1) + " ms" : v.toFixed(2) + " s";
  }
  function fmtMoney(v, currency) {
    return v === null || v === undefined ? "–" : v.toFixed(4) + " " + (currency || "");
  }

  function setTile(id, value, text) {
    var el = byTestId(id);
    if (!el) return;
    el.textContent = text;
    el.setAttribute("data-value", value === null || value === undefined ? "" : String(value));
  }

  function renderTiles(s) {
    var t = s.totals;
    var money = t.money;
    var currency = s.pricing && s.pricing.currency;
    setTile("requests-total", t.requests.total, fmtInt(t.requests.total));
    setTile("requests-reuse", t.requests.reuse, fmtInt(t.requests.reuse));
    setTile("requests-guided", t.requests.guided, fmtInt(t.requests.guided));
    setTile("requests-cold", t.requests.cold, fmtInt(t.requests.cold));
    setTile("reuse-rate", t.reuse_rate, fmtRate(t.reuse_rate));
    setTile("net-saved-tokens", t.net_saved_tokens, fmtInt(t.net_saved_tokens));
    setTile("saved-tokens", t.saved_tokens, fmtInt(t.saved_tokens));
    setTile("net-saved-seconds", t.net_saved_seconds, fmtSeconds(t.net_saved_seconds));
    setTile("saved-seconds", t.saved_seconds, fmtSeconds(t.saved_seconds));
    setTile("money-saved", money ? money.net_saved : null, money ? fmtMoney(money.net_saved, currency) : "no prices set");
    setTile("money-spent", money ? money.spent : null, money ? fmtMoney(money.spent, currency) : "–");
    setTile("backend-tokens", t.backend_tokens.total, fmtInt(t.backend_tokens.total));
    setTile("backend-prompt-tokens", t.backend_tokens.prompt, fmtInt(t.backend_tokens.prompt));
    setTile("backend-completion-tokens", t.backend_tokens.completion, fmtInt(t.backend_tokens.completion));
    setTile("bad-rating-rate", t.bad_rating_rate, fmtRate(t.bad_rating_rate));
    setTile("bad-reuse", t.ratings.bad_reuse, fmtInt(t.ratings.bad_reuse));
    setTile("rated-reuse", t.ratings.rated_reuse, fmtInt(t.ratings.rated_reuse));
    const audit = t.reuse_audit;
    setTile("false-reuse-rate", audit.false_reuse_rate, fmtRate(audit.false_reuse_rate));
    setTile("false-reuse-upper", audit.upper_bound, fmtRate(audit.upper_bound));
    setTile("audit-disagreements", audit.disagreements, fmtInt(audit.disagreements));
    setTile("audit-trials", audit.agreements + audit.disagreements, fmtInt(audit.agreements + audit.disagreements));
    const verification = t.reuse_verification;
    setTile("verify-same", verification.same, fmtInt(verification.same));
    setTile("verify-checks", verification.checks, fmtInt(verification.checks));
    setTile("verify-tokens", verification.tokens, fmtInt(verification.tokens));
    setTile("verify-errors", verification.errors, fmtInt(verification.errors));
    const compute = t.adaptive_compute;
    setTile("samples-used", compute.vote.samples_used, fmtInt(compute.vote.samples_used));
    setTile("samples-allowed", compute.vote.samples_allowed, fmtInt(compute.vote.samples_allowed));
    setTile("rounds-used", compute.refine.rounds_used, fmtInt(compute.refine.rounds_used));
    setTile("rounds-allowed", compute.refine.rounds_allowed, fmtInt(compute.refine.rounds_allowed));
    setTile("compute-saved-tokens", compute.saved_tokens, fmtInt(compute.saved_tokens));
    setTile("refine-checks", compute.refine.checks, fmtInt(compute.refine.checks));
    setTile("latency-p50", t.latency_seconds.total.p50, fmtLatency(t.latency_seconds.total.p50));
    setTile("latency-p99", t.latency_seconds.total.p99, fmtLatency(t.latency_seconds.total.p99));
    setTile("proxy-p50", t.latency_seconds.proxy_added.p50, fmtLatency(t.latency_seconds.proxy_added.p50));
    setTile("proxy-p99", t.latency_seconds.proxy_added.p99, fmtLatency(t.latency_seconds.proxy_added.p99));
    setTile("episodes-total", s.memory.total, fmtInt(s.memory.total));
    setTile("escalations", t.escalations, fmtInt(t.escalations));
  }

  // -- charts ------------------------------------------------------------------------------------
  function width(el) { return Math.max(300, el.clientWidth || 520); }

  function cumulative(values) {
    var sum = 0;
    return values.map(function (v) { sum += v || 0; return sum; });
  }

  function plus(a, b) { return a.map(function (v, i) { return (v || 0) + (b[i] || 0); }); }

  function ms(values) { return values.map(function (v) { return v === null ? null : v * 1000; }); }

  // Leading steps before the first request are dropped from the time charts (keeping at least
  // MIN_STEPS), so a young proxy's minutes of traffic are not a sliver at the right edge.
  var MIN_STEPS = 12;
  function timeAxis() { return { space: 90 }; }
  function visibleSeries(series) {
    var n = series.t.length, first = n;
    for (var i = 0; i < n; i++) {
      if (series.reuse[i] || series.guided[i] || series.cold[i]) { first = i; break; }
    }
    var start = Math.max(0, Math.min(first - 2, n - MIN_STEPS));
    var out = {};
    Object.keys(series).forEach(function (k) { out[k] = series[k].slice(start); });
    return out;
  }

  function upsert(name, el, optsFn, data) {
    var chart = charts[name];
    if (chart) {
      chart.setData(data);
      return chart;
    }
    chart = new uPlot(optsFn(width(el)), data, el);
    charts[name] = chart;
    return chart;
  }

  function renderSavings(s) {
    var x = visibleSeries(s.series);
    var data = [x.t, cumulative(x.net_saved_tokens), cumulative(x.saved_tokens),
                cumulative(plus(x.prompt_tokens, x.completion_tokens))];
    upsert("savings", $("chart-savings"), function (w) {
      return {
        width: w, height: 240,
        series: [
          {},
          { label: "net saved", stroke: COLORS.reuse, width: 2, fill: "rgba(15,157,88,0.12)" },
          { label: "gross saved", stroke: COLORS.reuse, width: 1, dash: [5, 4] },
          { label: "backend spent", stroke: COLORS.spent, width: 2 },
        ],
        axes: [timeAxis(), { size: 60 }],
      };
    }, data);
  }

  function renderTiers(s) {
    var x = visibleSeries(s.series);
    var cold = x.cold, guided = plus(x.cold, x.guided), all = plus(guided, x.reuse);
    tierCounts = [null, x.reuse, x.guided, x.cold];
    var bars = uPlot.paths.bars({ size: [0.8, 40] });
    var data = [x.t, all, guided, cold];
    upsert("tiers", $("chart-tiers"), function (w) {
      function series(label, color, idx) {
        return { label: label, stroke: color, fill: color, paths: bars, points: { show: false },
                 value: function (u, v, si, i) { return i === null || i === undefined ? "–" : tierCounts[idx][i]; } };
      }
      return {
        width: w, height: 240,
        series: [{}, series("reuse", COLORS.reuse, 1), series("guided", COLORS.guided, 2), series("cold", COLORS.cold, 3)],
        scales: { y: { range: function (u, min, max) { return [0, Math.max(1, max)]; } } },
        axes: [timeAxis(), {}],
      };
    }, data);
  }

  function renderLatency(s) {
    var x = visibleSeries(s.series);
    var data = [x.t, ms(x.total_p50), ms(x.total_p90), ms(x.total_p99), ms(x.proxy_p50), ms(x.proxy_p99)];
    upsert("latency", $("chart-latency"), function (w) {
      function line(label, color, dash) {
        return { label: label, stroke: color, width: 2, dash: dash, spanGaps: true, points: { show: true, size: 6 } };
      }
      return {
        width: w, height: 240,
        series: [{}, line("p50", COLORS.p50), line("p90", COLORS.p90), line("p99", COLORS.p99),
                 line("proxy-added p50", COLORS.proxy, [4, 4]), line("proxy-added p99", COLORS.proxy)],
        scales: { y: { distr: 3, log: 10, range: function (u, min, max) {
          if (min === null || max === null || !isFinite(min) || !isFinite(max)) return [1, 1000];
          return uPlot.rangeLog(Math.max(0.1, min), Math.max(1, max), 10, true);
        } } },
        axes: [timeAxis(), { size: 60, splits: function (u, axis, min, max) {
          var out = [];
          for (var p = Math.floor(Math.log10(min)); p <= Math.ceil(Math.log10(max)); p++) {
            var v = Math.pow(10, p);
            if (v >= min * 0.999 && v <= max * 1.001) out.push(v);
          }
          return out;
        } }],
      };
    }, data);
  }

  function renderMemory(s) {
    var episodes = s.memory.episodes || {};
    var names = Object.keys(episodes).sort();
    var data = [names.map(function (_, i) { return i; }), names.map(function (n) { return episodes[n]; })];
    var signature = names.join("\u0000");
    if (charts.memory && signature !== memoryTenants) {
      charts.memory.destroy();
      delete charts.memory;
    }
    memoryTenants = signature;
    byTestId("memory-tenants").textContent = names.length
      ? names.map(function (n) { return n + ": " + fmtInt(episodes[n]); }).join(" · ")
      : "memory is empty";
    upsert("memory", $("chart-memory"), function (w) {
      return {
        width: w, height: 240,
        scales: {
          x: { time: false, range: function () { return [-0.5, Math.max(0, names.length - 1) + 0.5]; } },
          y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.15)]; } },
        },
        axes: [
          { splits: function () { return names.map(function (_, i) { return i; }); },
            values: function (u, splits) { return splits.map(function (i) { return names[i] || ""; }); } },
          { size: 50 },
        ],
        series: [{ label: "tenant", value: function (u, i) { return names[i] || "–"; } },
                 { label: "episodes", stroke: COLORS.memory, fill: "rgba(59,130,246,0.6)",
                   paths: uPlot.paths.bars({ size: [0.5, 80] }), points: { show: false } }],
      };
    }, data);
  }

  // -- table -------------------------------------------------------------------------------------
  function cell(text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function renderEpisodes(s) {
    var body = $("episodes-body");
    body.textContent = "";
    if (!s.top_episodes.length) {
      var tr = document.createElement("tr");
      var td = cell("no reused episodes yet", "muted");
      td.colSpan = 7;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    s.top_episodes.forEach(function (e) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-testid", "episode-row");
      tr.setAttribute("data-episode-id", e.id);
      var q = cell(e.question, "question");
      q.title = e.question;
      tr.appendChild(q);
      tr.appendChild(cell(e.tenant));
      tr.appendChild(cell(fmtInt(e.hits), "num"));
      tr.appendChild(cell(e.rating || "unrated", e.rating ? "rating-" + e.rating : "muted"));
      tr.appendChild(cell(fmtInt(e.estimated_saved_tokens), "num"));
      tr.appendChild(cell(e.source_tier));
      tr.appendChild(cell(new Date(e.last_used_at * 1000).toLocaleTimeString("en-GB")));
      body.appendChild(tr);
    });
  }

  function renderTenants(s) {
    var select = $("tenant");
    if (!s.tenants) { select.disabled = true; return; }
    var current = select.value;
    var wanted = [""].concat(s.tenants);
    var have = Array.prototype.map.call(select.options, function (o) { return o.value; });
    if (have.join("\u0000") === wanted.join("\u0000")) return;
    select.textContent = "";
    wanted.forEach(function (name) {
      var option = document.createElement("option");
      option.value = name;
      option.textContent = name || "all tenants";
      select.appendChild(option);
    });
    select.value = wanted.indexOf(current) >= 0 ? current : "";
  }

  // -- polling -----------------------------------------------------------------------------------
  function status(text, isError) {
    var el = $("status");
    el.textContent = text;
    el.className = "status" + (isError ? " error" : "");
  }

  function url() {
    var q = new URLSearchParams({ window: $("window").value });
    if ($("tenant").value) q.set("tenant", $("tenant").value);
    return "/v1/speedup/stats?" + q.toString();
  }

  function refresh() {
    var headers = key ? { Authorization: "Bearer " + key } : {};
    return fetch(url(), { headers: headers, cache: "no-store" })
      .then(function (r) {
        if (!r.ok) {
          return r.json().catch(function () { return {}; }).then(function (body) {
            var message = (body.error && body.error.message) || r.statusText;
            throw new Error(r.status + ": " + message);
          });
        }
        return r.json();
      })
      .then(function (s) {
        renderTiles(s);
        renderTenants(s);
        renderSavings(s);
        renderTiers(s);
        renderLatency(s);
        renderMemory(s);
        renderEpisodes(s);
        document.body.setAttribute("data-generated-at", String(s.generated_at));
        document.body.setAttribute("data-ready", "1");
        status("updated " + new Date().toLocaleTimeString("en-GB"), false);
      })
      .catch(function (error) { status("cannot load stats — " + error.message, true); });
  }

  function restart() {
    Object.keys(charts).forEach(function (name) { charts[name].destroy(); delete charts[name]; });
    memoryTenants = "";
    refresh();
  }

  $("window").addEventListener("change", restart);
  $("tenant").addEventListener("change", restart);
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (name) {
      var chart = charts[name];
      chart.setSize({ width: width(chart.root.parentNode), height: 240 });
    });
  });
  refresh();
  timer = window.setInterval(refresh, REFRESH_MS);
  window.speedupDashboard = { refresh: refresh, stop: function () { window.clearInterval(timer); } };
})();
