"""The Jinja2 template of the task report (autoescaped: every value from the data is escaped)."""

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Falconer report: {{ d.task }}</title>
<style>
  body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px; padding: 1.5em; color: #212121; }
  h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #e0e0e0; }
  .muted { color: #616161; } .instruction { font-size: 1.15em; font-style: italic; }
  table { border-collapse: collapse; margin: 0.5em 0; } th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .totals span { display: inline-block; margin-right: 1.5em; } .totals b { font-size: 1.3em; }
  .legend span { padding: 1px 6px; margin-right: 8px; border-radius: 3px; }
  .doc { border: 1px solid #e0e0e0; border-radius: 6px; padding: 0.6em 0.9em; margin: 0.6em 0; }
  .doc header { font-size: 0.9em; color: #616161; margin-bottom: 0.3em; }
  .doc .text { white-space: pre-wrap; }
  mark { border-radius: 3px; padding: 0 1px; }
  mark.multi { outline: 2px solid #d32f2f; }
  .badge { display: inline-block; font-size: 0.85em; padding: 0 6px; border-radius: 10px; margin-right: 6px; }
  .badge.true { background: #c8e6c9; } .badge.false { background: #ffcdd2; }
  .bar { background: #90caf9; height: 10px; display: inline-block; vertical-align: middle; }
  .counts { display: flex; flex-wrap: wrap; gap: 2em; }
  pre.plan { background: #f5f5f5; padding: 0.8em; overflow-x: auto; }
</style>
</head>
<body>
<h1>{{ d.task }}</h1>
<div class="instruction">{{ d.instruction }}</div>
<div class="muted">corpus <code>{{ d.corpus }}</code>{% for n in d.notes %} · {{ n }}{% endfor %}</div>

<h2>Totals</h2>
<div class="totals" id="totals">
  <span><b>{{ d.totals.rows }}</b> rows mined</span>
  <span><b>{{ d.totals.docs }}</b> documents with a row</span>
  <span><b>{{ d.totals.files }}</b> corpus files</span>
  <span><b>{{ d.totals.rejects }}</b> rejected records</span>
</div>

<h2>Eval: proxy vs annotator on held-out documents</h2>
{% if evals %}
<table id="eval">
  <tr><th>sub-task</th><th>question</th><th>n docs</th><th>gold</th><th>F1 [95% CI]</th><th>precision</th><th>recall</th><th>word F1 [95% CI]</th></tr>
  {% for e in evals %}
  <tr><td>{{ e.kind }}</td><td>{{ e.instruction }}</td><td class="num">{{ e.n }}</td>
      <td class="num">{{ e.gold|int if e.gold is not none else "–" }}</td>
      <td class="num">{{ e.f1|f3 }} [{{ e.low|f3 }}, {{ e.high|f3 }}]</td>
      <td class="num">{{ e.precision|f3 }}</td><td class="num">{{ e.recall|f3 }}</td>
      <td class="num">{% if e.kind == "span" %}{{ e.word_f1|f3 }} [{{ e.word_low|f3 }}, {{ e.word_high|f3 }}]{% else %}–{% endif %}</td></tr>
  {% endfor %}
</table>
<p class="muted">F1 of the proxy against the annotator, with a 95% bootstrap interval over the held-out documents:
two F1s whose intervals overlap widely are not shown to differ. gold: the annotator's positives (labels) or spans.</p>
{% else %}
<p class="muted">No eval yet: materialize <code>eval</code> for this task.</p>
{% endif %}

<h2>Training curve</h2>
{% if curve %}
<img id="curve" alt="training curve per epoch" src="data:image/png;base64,{{ curve }}">
{% else %}
<p class="muted">No training curve recorded for this checkpoint (trained before curves were kept).</p>
{% endif %}

<h2>Values per field</h2>
<div class="counts">
{% for c in counts %}
  <table class="valuecounts" data-field="{{ c.field }}">
    <tr><th colspan="3"><span class="legend"><span style="background: {{ colours.get(c.field, '#eee') }}">{{ c.field }}</span></span></th></tr>
    {% for v, n, w in c["values"] %}
    <tr><td>{{ v }}</td><td class="num">{{ n }}</td><td><span class="bar" style="width: {{ '%.0f'|format(w) }}px"></span></td></tr>
    {% endfor %}
  </table>
{% else %}
  <p class="muted">Nothing mined yet.</p>
{% endfor %}
</div>

<h2>Documents ({{ documents|length }} sampled)</h2>
<div class="legend">{% for f, c in colours.items() %}<span style="background: {{ c }}">{{ f }}</span>{% endfor %}
  <span class="muted">hover a highlight for its field and score; a red outline marks words two spans share</span></div>
{% for doc in documents %}
<div class="doc" data-doc-id="{{ doc.doc_id }}">
  <header><code>{{ doc.doc_id }}</code> · {{ doc.n_spans }} span{{ "" if doc.n_spans == 1 else "s" }}
    {% for f, v, s in doc.flags %}<span class="badge {{ v }}" title="score {{ '%.2f'|format(s) }}">{{ f }}: {{ v }}</span>{% endfor %}</header>
  <div class="text">{% for seg in doc.segments %}{% if seg.marks %}<mark class="{{ 'multi' if seg.marks|length > 1 else '' }}" data-field="{{ seg.marks[0].field }}" style="background: {{ colours.get(seg.marks[0].field, '#eee') }}" title="{% for m in seg.marks %}{{ m.field }} · score {{ '%.2f'|format(m.score) }}{% if not loop.last %}; {% endif %}{% endfor %}">{{ seg.text }}</mark>{% else %}{{ seg.text }}{% endif %}{% endfor %}</div>
</div>
{% endfor %}

<h2>Plan</h2>
<pre class="plan"><code>{{ d.plan_source }}</code></pre>
</body>
</html>
"""
