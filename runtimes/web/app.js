// The page: loads the bundle's step graph with onnxruntime-web (WASM, vendored beside this file by `trm-edge web`),
// runs the supervision loop of trm.js on this device and draws every step. The contract tests and scripts rely on:
// ?puzzle=<81 chars>[&halt=POLICY][&views=K] solves on load; body[data-state] ends "done" or "error";
// [data-testid=answer] is the answer as 81 characters, [data-testid=steps] the supervision steps used, and
// (a task trm-edge does not know: the puzzle and the answer are tokens separated by spaces, one view, no rules)
// window.trm.solve(text, {halt, views, draw}) solves from a script (an Android WebView, a benchmark).
import * as ort from "./vendor/ort.wasm.bundle.min.mjs";
import {
  BLANK, InputError, haltingLoop, parsePolicy, policyText, solveViews, taskOf, viewPolicy,
} from "./trm.js";

const $ = (id) => document.querySelector(`[data-testid=${id}]`);
const EXAMPLE = "52...6.........7.13...........4..8..6......5...........418.........3..2...87....."; // README's

function setState(state, message = "") {
  document.body.dataset.state = state;
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function load() {
  const response = await fetch("trm-device.json");
  if (!response.ok) throw new Error(`trm-device.json: HTTP ${response.status}; rebuild the site with trm-edge web`);
  const contract = await response.json();
  if (contract.format !== "trm-edge-device" || contract.format_version !== 1) {
    throw new Error("trm-device.json is not a contract this page reads; rebuild the site with trm-edge web");
  }
  const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = threads;
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(contract.graph.file,
    { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  return { contract, session, threads, initMs: performance.now() - t0 };
}

/** One supervision step of one row through the session; names and shapes come from the contract. */
function stepper({ contract, session }, tokens) {
  const [tok, pid, zH, zL] = contract.graph.inputs, [zHo, zLo, pred, qh, logits] = contract.graph.outputs;
  const tokenTensor = new ort.Tensor("int64", BigInt64Array.from(tokens, BigInt), tok.shape);
  const pidTensor = new ort.Tensor("int64", new BigInt64Array(1), pid.shape);
  const finite = (a) => a.every(Number.isFinite);
  return async (carry) => {
    const out = await session.run({ [tok.name]: tokenTensor, [pid.name]: pidTensor,
      [zH.name]: new ort.Tensor("float32", carry.h, zH.shape), [zL.name]: new ort.Tensor("float32", carry.l, zL.shape) });
    const h = out[zHo.name].data, l = out[zLo.name].data, q = out[qh.name].data[0];
    return { carry: { h, l }, pred: Int32Array.from(out[pred.name].data, Number), q,
      finite: Number.isFinite(q) && finite(h) && finite(l) && finite(out[logits.name].data) };
  };
}

function initialCarry({ contract }) {
  const { total_len: n, hidden_size: d, init } = contract;
  const h = new Float32Array(n * d), l = new Float32Array(n * d);
  for (let t = 0; t < n; t++) { h.set(init.H_init, t * d); l.set(init.L_init, t * d); }
  return { h, l };
}

// ---- drawing ------------------------------------------------------------------------------------------------

const cells = [];
function buildGrid() {
  const grid = $("grid");
  for (let i = 0; i < 81; i++) {
    const c = document.createElement("div");
    c.className = "cell";
    if (i % 9 === 2 || i % 9 === 5) c.classList.add("right");
    if (Math.floor(i / 9) === 2 || Math.floor(i / 9) === 5) c.classList.add("bottom");
    grid.append(c);
    cells.push(c);
  }
}

function draw(puzzle, tokens, previous) {
  cells.forEach((c, i) => {
    const t = tokens ? tokens[i] : puzzle[i];
    c.textContent = t > BLANK ? String(t - BLANK) : "";
    c.classList.toggle("given", puzzle[i] > BLANK);
    c.classList.toggle("changed", Boolean(previous) && previous[i] !== t && puzzle[i] <= BLANK);
  });
}

function showHistory(puzzle, history) {
  const scrub = $("scrub");
  scrub.max = String(history.length - 1);
  scrub.value = scrub.max;
  scrub.hidden = history.length < 2;
  scrub.oninput = () => {
    const i = Number(scrub.value), h = history[i];
    draw(puzzle, h.tokens, i > 0 ? history[i - 1].tokens : null);
    $("stepinfo").textContent = `view ${h.view + 1}, step ${h.k}, q_halt ${h.q.toFixed(2)}`;
  };
}

// ---- solving ------------------------------------------------------------------------------------------------

async function solve(model, text, { halt = null, views = model.contract.views.default, draw: drawing = false } = {}) {
  const { contract } = model, task = taskOf(contract);
  const puzzle = task.parse(text);
  if (!(Number.isInteger(views) && views >= 1 && views <= 256)) throw new InputError(`views ${views}: choose 1-256`);
  const policy = halt ? parsePolicy(halt, contract.halt_max_steps)
    : viewPolicy(parsePolicy(contract.halting, contract.halt_max_steps), views, contract.views.patience);
  if (!task.check && (views > 1 || policy.verify)) {
    throw new InputError(`a ${contract.task} task has no rules to check answers by: one view, and no verify`);
  }
  drawing = drawing && task.grid;
  let computeMs = 0;
  const history = [];
  const solveOne = (tokens, pol, onStep) => {
    const step = stepper(model, tokens);
    const timed = async (carry) => {
      const t0 = performance.now();
      const out = await step(carry);
      computeMs += performance.now() - t0;
      return out;
    };
    return haltingLoop(timed, initialCarry(model), pol, tokens, onStep);
  };
  const onStep = async (view, k, tokens, q) => {
    if (!drawing) return;
    history.push({ view, k, tokens, q });
    draw(puzzle, tokens, history.length > 1 ? history[history.length - 2].tokens : null);
    $("stepinfo").textContent = `view ${view + 1}, step ${k}, q_halt ${q.toFixed(2)}`;
    await new Promise((r) => setTimeout(r, 0)); // let the browser paint this step
  };
  const t0 = performance.now();
  const sol = await solveViews(solveOne, puzzle, policy, views, onStep);
  const wallMs = performance.now() - t0;
  if (drawing) showHistory(puzzle, history);
  return { puzzle: task.compact(puzzle), answer: sol.fault ? null : task.compact(sol.tokens),
    solved: task.check ? !sol.fault && task.check(puzzle, sol.tokens) : null, steps: sol.steps, view: sol.view, view_steps: sol.viewSteps, q_halt: sol.q,
    fault_step: sol.fault || null, halt: policyText(policy), views, compute_ms: computeMs, wall_ms: wallMs };
}

function report(res) {
  $("answer").textContent = res.answer ?? "";
  $("steps").textContent = String(res.steps);
  $("viewsteps").textContent = String(res.view_steps);
  $("view").textContent = `${res.view + 1}/${res.views}`;
  $("ms").textContent = res.compute_ms.toFixed(1);
  $("verdict").textContent = res.fault_step ? `no answer: NaN or Inf at step ${res.fault_step}`
    : res.solved === null ? "answered: the task has no rules to check it by"
      : res.solved ? "solved: the answer passes the rules" : "not solved: no view's answer passes the rules";
  $("verdict").className = res.solved === null ? "" : res.solved ? "ok" : "bad";
}

async function main() {
  const params = new URLSearchParams(location.search);
  const text = params.get("puzzle"), halt = params.get("halt");
  $("halt").value = halt ?? "";
  let model;
  try {
    setState("loading");
    model = await load();
    const sudoku = taskOf(model.contract).grid, { seq_len: n, vocab_size: v } = model.contract;
    if (sudoku) buildGrid();
    else $("puzzle-label").textContent = `Puzzle: ${n} tokens 0-${v - 1}, separated by spaces (or a JSON list)`;
    $("example").hidden = !sudoku;
    $("puzzle").value = text ?? (sudoku ? EXAMPLE : "");
    const { halting, views } = model.contract;
    $("views").value = params.get("views") ?? String(views.default);
    $("halt").placeholder = `default: ${halting} (with views: verify, ${views.patience} steps a view)`;
    $("model").textContent = `hidden ${model.contract.hidden_size}, ${model.contract.graph.precision}, ` +
      `${model.threads} thread(s)${self.crossOriginIsolated ? "" : " (page not cross-origin isolated)"}, ` +
      `loaded in ${model.initMs.toFixed(0)} ms`;
  } catch (e) {
    setState("error", `could not load the model: ${e.message}`);
    return;
  }
  window.trm = { contract: model.contract, threads: model.threads, solve: (t, o) => solve(model, t, o) };
  const run = async () => {
    setState("solving");
    $("answer").textContent = "";
    try {
      report(await solve(model, $("puzzle").value,
        { halt: $("halt").value.trim() || null, views: Number($("views").value), draw: true }));
      setState("done");
    } catch (e) {
      setState("error", e instanceof InputError ? e.message : `solver failed: ${e.message}`);
    }
  };
  $("solve").onclick = run;
  $("example").onclick = () => { $("puzzle").value = EXAMPLE; };
  $("clear").onclick = () => { $("puzzle").value = ""; $("puzzle").focus(); };
  if (text !== null) await run(); else setState("ready");
}

main();
