// The solver's logic for the browser, with no page in it (node runs it too): sudoku text <-> tokens, the rules
// check, any other task's tokens, halting policies and the supervision loop. It mirrors trm_edge/tasks/sudoku.py,
// trm_edge/tasks/generic.py, trm_edge/halting.py and
// the method of trm_edge/views.py (its views are drawn by its own generator, so with several views the winning
// view and the steps may differ from `trm-edge solve`'s; a verified answer is the same). tests/test_web.py holds
// the page to `trm-edge solve` on the same bundle.

export const PAD = 0, BLANK = 1;
const MAX_STEPS = 256;
const USAGE = "use fixed[:N] or learned[:TAU][,min=K][,max=M], then ,verify to stop at an answer the rules accept; " +
  "e.g. fixed:16 or learned:3,max=6,verify";
const BLANK_HINT = "(use '.' or '0' for blanks)";
const SEPARATORS = " \t|-+";
const CHARS = "?.123456789";

export class InputError extends Error {}

// ---- sudoku ------------------------------------------------------------------------------------------------

function cells(text) {
  const s = text.trim();
  if (!s.includes("\n")) {
    if ([...s].length !== 81) throw new InputError(`sudoku: expected 81 cells, got ${[...s].length} ${BLANK_HINT}`);
    return s;
  }
  const rows = s.split(/\r?\n/).map((l) => [...l].filter((ch) => !SEPARATORS.includes(ch)).join("")).filter(Boolean);
  if (rows.length !== 9) {
    throw new InputError(`sudoku: expected 9 grid rows, got ${rows.length} (lines of only '-', '+', '|' are rules)`);
  }
  rows.forEach((row, i) => {
    if ([...row].length !== 9) {
      throw new InputError(`sudoku: grid row ${i + 1} has ${[...row].length} cells, expected 9 ${BLANK_HINT}`);
    }
  });
  return rows.join("");
}

function* units(grid) { // grid: 81 digits; yields [name, 9 values] as a user finds them
  for (let i = 0; i < 9; i++) yield [`row ${i + 1}`, grid.slice(9 * i, 9 * i + 9)];
  for (let i = 0; i < 9; i++) yield [`column ${i + 1}`, Array.from({ length: 9 }, (_, r) => grid[9 * r + i])];
  for (let b = 0; b < 9; b++) {
    const r = 3 * Math.floor(b / 3), c = 3 * (b % 3);
    const vals = [];
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) vals.push(grid[9 * (r + i) + c + j]);
    yield [`box ${b + 1} (rows ${r + 1}-${r + 3}, columns ${c + 1}-${c + 3})`, vals];
  }
}

function digitCounts(values) {
  const counts = new Array(10).fill(0);
  for (const v of values) counts[v]++;
  return counts.slice(1);
}

/** Puzzle text (81 characters, or a 9-line grid) -> 81 tokens; throws InputError saying what is wrong. */
export function parseSudoku(text) {
  const digits = [...cells(text)].map((ch, i) => {
    if (!/^[.0-9]$/.test(ch)) {
      throw new InputError(`sudoku: illegal character '${ch}' at position ${i + 1} (row ${Math.floor(i / 9) + 1}, ` +
        `column ${(i % 9) + 1}); use 1-9 for clues ${BLANK_HINT}`);
    }
    return ch === "." ? 0 : Number(ch);
  });
  for (const [unit, values] of units(digits)) {
    const counts = digitCounts(values), most = Math.max(...counts);
    if (most > 1) {
      throw new InputError(`sudoku: contradictory clues: digit ${counts.indexOf(most) + 1} appears ${most} times ` +
        `in ${unit}`);
    }
  }
  return Int32Array.from(digits, (d) => d + BLANK);
}

/** Filled, every unit a permutation of 1..9, every given kept. */
export function checkSudoku(puzzle, answer) {
  for (let i = 0; i < 81; i++) {
    if (answer[i] <= BLANK || (puzzle[i] > BLANK && answer[i] !== puzzle[i])) return false;
  }
  const grid = Array.from(answer, (t) => t - BLANK);
  for (const [, values] of units(grid)) if (!digitCounts(values).every((c) => c === 1)) return false;
  return true;
}

/** 81 characters, '.' for a blank: what `trm-edge solve --json` gives as "answer". */
export const compact = (tokens) => Array.from(tokens, (t) => CHARS[t] ?? "?").join("");

// ---- any other task: tokens as they are (trm_edge/tasks/generic.py) --------------------------------------------

/** A JSON list of ints, or ints separated by spaces or commas -> seqLen tokens below vocabSize. */
export function parseTokens(text, seqLen, vocabSize) {
  const s = text.trim(), form = "give a JSON list of ints, or ints separated by spaces or commas";
  let values;
  if (s.startsWith("[")) {
    try { values = JSON.parse(s); } catch { throw new InputError(`generic: not JSON; ${form}`); }
  } else {
    values = s.split(/[\s,]+/).filter(Boolean).map((x) => (/^-?\d+$/.test(x) ? Number(x) : x));
  }
  if (!Array.isArray(values) || !values.every(Number.isInteger)) {
    throw new InputError(`generic: a puzzle is a list of integer tokens; ${form}`);
  }
  if (values.length !== seqLen) {
    throw new InputError(`generic: the puzzle has ${values.length} tokens, the model reads ${seqLen} (pad to that ` +
      "length as the dataset does)");
  }
  const bad = values.findIndex((t) => t < 0 || t >= vocabSize);
  if (bad >= 0) {
    throw new InputError(`generic: token ${values[bad]} at position ${bad} is outside the vocabulary ` +
      `0-${vocabSize - 1}`);
  }
  return Int32Array.from(values);
}

/** The tokens separated by spaces: what `trm-edge solve --json` gives as a generic task's "answer". */
export const tokenText = (tokens) => Array.from(tokens).join(" ");

/** How the page reads, writes and judges the contract's task; `check` null: no rules (no verify, no views). */
export function taskOf(contract) {
  if (contract.task === "sudoku") return { parse: parseSudoku, compact, check: checkSudoku, grid: true };
  return { parse: (text) => parseTokens(text, contract.seq_len, contract.vocab_size), compact: tokenText,
    check: null, grid: false };
}

// ---- symmetric views (digit relabelling, transpose, band/stack and row/column-within-band shuffles) ----------

function shuffled(n, rand) {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** A deterministic random stream from a puzzle (FNV-1a, then mulberry32): a puzzle always gets the same views. */
export function seededRandom(text) {
  let a = 0x811c9dc5;
  for (const ch of text) a = Math.imul(a ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random symmetry as {cells, values}: view[i] = values[tokens[cells[i]]], as trm_edge.tasks.base.View. */
export function randomView(rand = Math.random) {
  const lines = () => shuffled(3, rand).flatMap((band) => shuffled(3, rand).map((k) => 3 * band + k));
  const rows = lines(), cols = lines(), transpose = rand() < 0.5, digits = shuffled(9, rand);
  const cellMap = new Int32Array(81);
  for (let r = 0; r < 9; r++) {
    for (let c = 0; c < 9; c++) cellMap[9 * r + c] = transpose ? 9 * cols[c] + rows[r] : 9 * rows[r] + cols[c];
  }
  const values = Int32Array.from([PAD, BLANK, ...digits.map((d) => d + 1 + BLANK)]);
  return { cells: cellMap, values };
}

export const forward = (view, tokens) => Int32Array.from(view.cells, (src) => view.values[tokens[src]]);

export function back(view, tokens) {
  const inv = new Int32Array(view.values.length), out = new Int32Array(tokens.length);
  view.values.forEach((v, i) => { inv[v] = i; });
  view.cells.forEach((src, i) => { out[src] = inv[tokens[i]]; });
  return out;
}

// ---- halting ------------------------------------------------------------------------------------------------

// Python's int() and float(): surrounding blanks, one sign, underscores between digits.
const DIGITS = "\\d+(?:_\\d+)*";
const INTEGER = new RegExp(`^[+-]?${DIGITS}$`);
const DECIMAL = new RegExp(`^[+-]?(?:${DIGITS}(?:\\.(?:${DIGITS})?)?|\\.${DIGITS})(?:e[+-]?${DIGITS})?$`, "i");

function integer(text) {
  const t = text.trim();
  if (!INTEGER.test(t)) throw new InputError();
  return Number(t.replaceAll("_", ""));
}

function number(text) {
  const t = text.trim(), m = /^([+-]?)(inf|infinity|nan)$/i.exec(t);
  if (m) return m[2].toLowerCase() === "nan" ? NaN : m[1] === "-" ? -Infinity : Infinity;
  if (!DECIMAL.test(t)) throw new InputError();
  return Number(t.replaceAll("_", ""));
}

/** A policy string as trm_edge.halting.HaltPolicy.parse reads it: {kind, maxSteps, threshold, minSteps, verify}. */
export function parsePolicy(text, haltMaxSteps) {
  const [head, ...rest] = String(text).trim().split(",").map((p) => p.trim());
  const verify = rest.includes("verify"), opts = rest.filter((o) => o !== "verify");
  const colon = head.indexOf(":"), kind = colon < 0 ? head : head.slice(0, colon), arg = colon < 0 ? "" : head.slice(colon + 1);
  let pol;
  try {
    if (kind === "fixed") {
      if (opts.length) throw new InputError();
      pol = { kind, maxSteps: arg ? integer(arg) : haltMaxSteps, threshold: Infinity, minSteps: 1, verify };
    } else if (kind === "learned") {
      const kw = new Map();
      for (const o of opts) {
        const eq = o.indexOf("=");
        if (eq < 0) throw new InputError();
        kw.set(o.slice(0, eq), o.slice(eq + 1));
      }
      if ([...kw.keys()].some((k) => k !== "min" && k !== "max")) throw new InputError();
      pol = { kind, maxSteps: kw.has("max") ? integer(kw.get("max")) : haltMaxSteps,
        threshold: arg ? number(arg) : 0, minSteps: kw.has("min") ? integer(kw.get("min")) : 1, verify };
    } else throw new InputError();
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    throw new InputError(`halting policy '${text}' not understood: ${USAGE}`);
  }
  if (!(1 <= pol.minSteps && pol.minSteps <= pol.maxSteps && pol.maxSteps <= MAX_STEPS)) {
    throw new InputError(`halting policy '${text}': need 1 <= min <= max <= ${MAX_STEPS} steps, got ` +
      `min=${pol.minSteps} max=${pol.maxSteps}`);
  }
  if (Number.isNaN(pol.threshold)) throw new InputError(`halting policy '${text}': the threshold must be a number, not NaN`);
  return pol;
}

export function policyText(p) {
  const tau = Number.isFinite(p.threshold) ? String(p.threshold) : p.threshold > 0 ? "inf" : "-inf";
  const head = p.kind === "fixed" ? `fixed:${p.maxSteps}` : `learned:${tau},min=${p.minSteps},max=${p.maxSteps}`;
  return head + (p.verify ? ",verify" : "");
}

/** views.view_policy: under several views, stop at a verified answer and give way after `patience` steps. */
export function viewPolicy(p, views, patience) {
  if (views === 1) return p;
  const steps = Math.min(p.maxSteps, patience);
  return { ...p, verify: true, maxSteps: steps, minSteps: Math.min(p.minSteps, steps) };
}

// q_halt is float32 and numpy compares it with the threshold in float32: so does this.
export const halted = (p, k, q) => k >= p.maxSteps || (q > Math.fround(p.threshold) && k >= p.minSteps);

// ---- the supervision loop -----------------------------------------------------------------------------------

/**
 * One row through halting.halting_loop: `step(carry) -> {carry, pred, q, finite}` runs one supervision step;
 * `onStep(k, pred, q)` sees every step (the page draws the refinement). Returns {tokens, steps, q, fault}.
 */
export async function haltingLoop(step, carry, policy, puzzle, onStep = () => {}) {
  let tokens = null, steps = 0, q = 0, fault = 0;
  for (let k = 1; k <= policy.maxSteps; k++) {
    const out = await step(carry);
    carry = out.carry;
    tokens = out.pred; steps = k; q = out.q;
    if (!out.finite) { fault = k; tokens = new Int32Array(tokens.length); break; }
    await onStep(k, tokens, q);
    if (policy.verify && checkSudoku(puzzle, tokens)) break;
    if (halted(policy, k, q)) break;
  }
  return { tokens, steps, q, fault };
}

/**
 * views.solve_views for one puzzle: view 0 is the puzzle itself; each further view is a random symmetry, solved
 * in its own round, and the first answer the rules accept (mapped back) wins. `solveOne(tokens, policy, onStep)`
 * runs haltingLoop on one view. Returns {tokens, steps, q, fault, view, viewSteps}.
 */
export async function solveViews(solveOne, puzzle, policy, views, onStep = () => {},
  rand = seededRandom(compact(puzzle))) {
  let best = null, spent = 0;
  for (let v = 0; v < views; v++) {
    const view = v === 0 ? null : randomView(rand);
    const toPuzzle = (t) => (view ? back(view, t) : t);
    const sol = await solveOne(view ? forward(view, puzzle) : puzzle, policy,
      (k, pred, q) => onStep(v, k, toPuzzle(pred), q));
    spent += sol.steps;
    const answer = toPuzzle(sol.tokens);
    if (best === null) best = { ...sol, tokens: answer, view: 0 };
    if (views > 1 && !sol.fault && checkSudoku(puzzle, answer)) {
      best = { ...sol, tokens: answer, view: v };
      break;
    }
  }
  return { ...best, viewSteps: spent };
}
