// The classifier's labels and the words behind them: each label with its confidence and evidence, and
// the text with those words marked (as <mark> elements around text nodes: the text is never parsed).

const MAX_PHRASES = 200;
const MAX_PHRASE_CHARS = 200;

/** The labels of a classification, as [{kind, value, confidence, evidence}], in reading order. */
export function labelsOf(c) {
  if (!c || typeof c !== "object") return [];
  const labels = [
    {
      kind: "sentiment",
      value: c.sentiment,
      confidence: c.sentiment_confidence,
      evidence: c.sentiment_evidence,
    },
    { kind: "intent", value: c.intent, confidence: c.intent_confidence, evidence: c.intent_evidence },
  ];
  for (const topic of c.topics || []) {
    labels.push({ kind: "topic", value: topic.name, confidence: topic.confidence, evidence: topic.evidence });
  }
  labels.push({
    kind: "urgency",
    value: typeof c.urgency === "number" ? c.urgency.toFixed(2) : "–",
    confidence: null,
    evidence: c.urgency_evidence,
  });
  labels.push({
    kind: "language",
    value: c.language,
    confidence: c.language_confidence,
    evidence: c.language_evidence,
  });
  for (const d of c.departments || []) {
    labels.push({ kind: "suggests", value: d.name, confidence: d.confidence, evidence: d.evidence });
  }
  return labels
    .filter((l) => l.value !== undefined && l.value !== null && l.value !== "")
    .map((l) => ({ ...l, evidence: Array.isArray(l.evidence) ? l.evidence.filter(isPhrase) : [] }));
}

function isPhrase(value) {
  return typeof value === "string" && value.trim().length > 0 && value.length <= MAX_PHRASE_CHARS;
}

// Evidence names what it is: `word:`, `term:`, `regex:`, `cue:`, `contrast:` carry words of the text; the
// lexicon's hits read `[caps:|boost:|negated:]<word>=<+-valence>`, `emoticon:<emoticon>=<+-valence>`.
// Everything else (a model's probabilities, `reach:influence=2`, `stopwords:en=12`) is about the text,
// not in it.
const IN_TEXT = /^(?:word|term|regex|cue|contrast):(.+)$/s;
const SCORED = /^(?:(?:caps|boost|negated):)?([^=:]+)=[+-]\d+(?:\.\d+)?$/s;
const EMOTICON = /^emoticon:(.+)=[+-]\d+(?:\.\d+)?$/s;

/** The words of the text an evidence string points at, or null when it points at none. */
export function phraseOf(evidence) {
  const match = IN_TEXT.exec(evidence) || SCORED.exec(evidence) || EMOTICON.exec(evidence);
  const phrase = match ? match[1].trim() : "";
  return phrase ? phrase : null;
}

// A learned model's `word:` evidence may be a function word ("the", "is"): real evidence to the model,
// noise to a reader, and marked wherever it stands. Those are listed under their label, not marked.
const FUNCTION_WORDS = new Set(
  (
    "a an the and or but if of to in on at by for from with as is are was were be been it its this that " +
    "these those i me my we our you your he she they them his her their there here so do does did has " +
    "have had will would can could just also than then"
  ).split(" "),
);

function markable(evidence, phrase) {
  return !(evidence.startsWith("word:") && FUNCTION_WORDS.has(phrase.toLowerCase()));
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export function labelKey(label) {
  return `${label.kind} ${label.value}`;
}

/** phrase (lower case) -> the labels it is evidence for ("topic bug", ...). */
export function evidenceIndex(labels) {
  const index = new Map();
  const add = (phrase, label) => {
    const key = phrase.toLowerCase();
    if (!index.has(key)) index.set(key, []);
    if (!index.get(key).includes(labelKey(label))) index.get(key).push(labelKey(label));
  };
  for (const label of labels) {
    for (const evidence of label.evidence) {
      const phrase = phraseOf(evidence);
      if (phrase === null || !markable(evidence, phrase)) continue;
      add(phrase, label);
      // A negated word ("not fine") is marked where the word stands, wherever the "not" is.
      if (phrase.toLowerCase().startsWith("not ")) add(phrase.slice(4).trim(), label);
    }
  }
  return index;
}

/** A DocumentFragment of `text` with every evidence phrase found in it inside a <mark> (its labels in
 * data-labels, "|"-separated). */
export function highlight(text, index) {
  const fragment = document.createDocumentFragment();
  const phrases = [...index.keys()].sort((a, b) => b.length - a.length).slice(0, MAX_PHRASES);
  if (!text || phrases.length === 0) {
    fragment.append(document.createTextNode(text || ""));
    return fragment;
  }
  // Whole words only ("a" is evidence, not every letter a); longest first, so that at one position the
  // alternation takes the longest phrase that matches.
  const pattern = new RegExp(
    `(?<![\\p{L}\\p{N}])(?:${phrases.map(escapeRegExp).join("|")})(?![\\p{L}\\p{N}])`,
    "giu",
  );
  let at = 0;
  for (const match of text.matchAll(pattern)) {
    if (match[0].length === 0) continue;
    if (match.index > at) fragment.append(document.createTextNode(text.slice(at, match.index)));
    const mark = document.createElement("mark");
    mark.className = "evidence";
    mark.textContent = match[0];
    const labels = index.get(match[0].toLowerCase()) || [];
    mark.title = labels.join(", ");
    mark.dataset.labels = labels.join("|");
    fragment.append(mark);
    at = match.index + match[0].length;
  }
  if (at < text.length) fragment.append(document.createTextNode(text.slice(at)));
  return fragment;
}
