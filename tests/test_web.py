"""The solver in the browser: the page's own logic (runtimes/web/trm.js) against the Python codec and halting
policies under node, and the built site end to end in headless Chromium against `trm-edge solve` on ORT."""

from __future__ import annotations

import json
import subprocess
import threading

import numpy as np
import pytest
from conftest import REPO, require_tool

from trm_edge.errors import TRMEdgeError
from trm_edge.halting import HaltPolicy
from trm_edge.runtimes.browser import CHROMIUM, CHROMIUM_ARGS
from trm_edge.tasks import SUDOKU

TRM_JS = REPO / "runtimes" / "web" / "trm.js"
EXAMPLE = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"  # README's
SOLVED = "417369825632158947958724316825437169791586432346912758289643571573291684164875293"


def _node(script: str, cases: list) -> list:
    require_tool("node", "runs the page's logic outside a browser")
    code = f"import * as trm from {json.dumps(TRM_JS.as_uri())};\nconst cases = JSON.parse(process.argv[1]);\n{script}"
    res = subprocess.run(["node", "--input-type=module", "-e", code, json.dumps(cases)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _python(fn, *args):
    try:
        return {"ok": fn(*args)}
    except TRMEdgeError as e:
        return {"error": str(e)}


def test_page_parses_and_checks_sudoku_as_python():
    grid = SUDOKU.render(SUDOKU.parse(EXAMPLE))
    texts = [EXAMPLE, EXAMPLE.replace(".", "0"), grid, EXAMPLE[:80], EXAMPLE[:5] + "x" + EXAMPLE[6:],
             "44" + EXAMPLE[2:], "\n".join(grid.splitlines()[:-1]), grid.replace("4", "44", 1), "  " + EXAMPLE + " \n"]
    got = _node("console.log(JSON.stringify(cases.map((t) => { try { return {ok: Array.from(trm.parseSudoku(t))}; }"
                " catch (e) { return {error: e.message}; } })));", texts)
    assert got == [_python(lambda t: SUDOKU.parse(t).tolist(), t) for t in texts]
    puzzle, answer = SUDOKU.parse(EXAMPLE), SUDOKU.parse(SOLVED)
    wrong = answer.copy()
    wrong[[0, 1]] = wrong[[1, 0]]
    unfilled = answer.copy()
    unfilled[5] = 1
    changed_given = SUDOKU.parse(SOLVED)  # a valid grid that does not keep the puzzle's givens
    changed_given = changed_given[[*range(9, 81), *range(9)]]
    pairs = [(puzzle, a) for a in (answer, wrong, unfilled, changed_given)]
    got = _node("console.log(JSON.stringify(cases.map(([p, a]) => trm.checkSudoku(p, a))));",
                [[p.tolist(), a.tolist()] for p, a in pairs])
    assert got == [SUDOKU.check(p, a) for p, a in pairs] == [True, False, False, False]


def test_page_reads_any_tasks_tokens_as_python():
    """A task trm-edge does not know: the page reads its tokens as trm_edge.tasks.generic does."""
    from trm_edge.tasks import GenericCodec

    codec = GenericCodec(12, 6)
    texts = ["2 3 4 5 6 7", "[2, 3, 4, 5, 6, 7]", " 2,3, 4 5,6 7\n", "2 3 4 5 6", "2 3 4 5 6 12", "2 3 x 5 6 7",
             "[2, 3, 4, 5, 6, -1]"]
    got = _node("console.log(JSON.stringify(cases.map((t) => { try { return {ok: Array.from(trm.parseTokens(t, 6, "
                "12))}; } catch (e) { return {error: e.message}; } })));", texts)
    want = [_python(lambda t: codec.parse(t).tolist(), t) for t in texts]
    assert [g.get("ok") for g in got] == [w.get("ok") for w in want]
    assert [g.get("error", "").split(";")[0] for g in got] == [w.get("error", "").split(";")[0] for w in want]
    assert _node("console.log(JSON.stringify(trm.tokenText(cases)));", [2, 10, 3]) == codec.render(np.array([2, 10, 3]))


def test_page_reads_halting_policies_as_python():
    texts = ["fixed", "fixed:4", "fixed,verify", "learned", "learned:3", "learned:-1.5,min=2,max=8", "learned:inf",
             "learned:3,max=6,verify", " learned:1e1 , min=3 ", "fixed:0", "fixed:300", "learned:nan", "learned:x",
             "learned:3,min=9,max=4", "learned:3,foo=1", "fixed:4,min=2", "greedy", "learned:3,verify,max=5",
             "learned:1_0", "learned:3,max=1_6", "learned:+-inf", "learned:+-1", "learned,__proto__=1", "learned:.5",
             "learned:-inf", "fixed: 4 "]
    got = _node("console.log(JSON.stringify(cases.map((t) => { try { const p = trm.parsePolicy(t, 16); "
                "const tau = Number.isFinite(p.threshold) ? p.threshold : String(p.threshold); "
                "return {ok: [p.kind, p.maxSteps, tau, p.minSteps, p.verify]}; } "
                "catch (e) { return {error: e.message}; } })));", texts)

    def fields(t):
        p = HaltPolicy.parse(t, 16)
        tau = p.threshold if np.isfinite(p.threshold) else "Infinity" if p.threshold > 0 else "-Infinity"
        return [p.kind, p.max_steps, tau, p.min_steps, p.verify]

    want = [_python(fields, t) for t in texts]
    assert got == [{"error": w["error"].replace(f"{t!r}", f"'{t}'")} if "error" in w else w
                   for t, w in zip(texts, want)]
    # q_halt is float32: a threshold that float32 rounds halts or not exactly as numpy decides
    q = [float(np.float32(v)) for v in (0.1, 0.3, 2.9999999)]
    policies = ["learned:0.1", "learned:0.3", "learned:3"]
    got = _node("console.log(JSON.stringify(cases.q.flatMap((q) => cases.p.map((t) => "
                "trm.halted(trm.parsePolicy(t, 16), 1, q)))));", {"q": q, "p": policies})
    assert got == [bool(HaltPolicy.parse(t, 16).halted(1, np.float32([v]))[0]) for v in q for t in policies]


def test_page_views_map_answers_back():
    """A view of a solved grid is a solved grid of the view's puzzle, and mapping it back gives the answer."""
    got = _node("const p = trm.parseSudoku(cases[0]), a = trm.parseSudoku(cases[1]); const out = [];"
                "for (let i = 0; i < 50; i++) { const v = trm.randomView(); const fp = trm.forward(v, p), "
                "fa = trm.forward(v, a); out.push([trm.checkSudoku(fp, fa), trm.compact(trm.back(v, fa)), "
                "trm.compact(fp) !== trm.compact(p)]); } console.log(JSON.stringify(out));", [EXAMPLE, SOLVED])
    assert all(ok and back == SOLVED for ok, back, _ in got)
    assert sum(moved for *_, moved in got) >= 45  # the views are not the identity


# -- end to end in Chromium --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(bundled_step_bundle, tmp_path_factory):
    require_tool("npm", "fetches onnxruntime-web once")
    from trm_edge.runtimes.browser import build_site

    return build_site(bundled_step_bundle, tmp_path_factory.mktemp("web") / "site")


@pytest.fixture(scope="module")
def browser():
    require_tool(CHROMIUM, "the headless browser of the end-to-end test")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _serve(site, isolate: bool):
    from trm_edge.runtimes.browser import server

    srv = server(site, port=0, isolate=isolate)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _open(browser, srv, query: str, width: int = 1000):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{srv.server_address[1]}/index.html?{query}")
    page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=180_000)
    assert not errors, errors
    return page


def _cli(bundle, puzzle: str, halt: str | None, views: int) -> dict:
    from trm_edge.api import Opening, open_model, solve_puzzles

    return solve_puzzles(open_model(str(bundle), Opening(backend="ort")), [puzzle], halt, views=views)["results"][0]


@pytest.fixture(scope="module")
def isolated(site):
    srv = _serve(site, isolate=True)
    yield srv
    srv.shutdown()
    srv.server_close()


def test_page_solves_as_the_cli_step_by_step(site, browser, isolated, bundled_step_bundle):
    """One view, the same policy: the same answer and the same steps as ORT's Solver, also where the model fails;
    at a phone's width nothing overflows sideways."""
    from trm_edge.api import builtin_data
    from trm_edge.tasks import read_puzzles

    pairs = read_puzzles(SUDOKU, str(builtin_data("sudoku")[0]))[:3]
    for puzzle in [SUDOKU.compact(p) for p, _ in pairs] + [EXAMPLE]:
        page = _open(browser, isolated, f"puzzle={puzzle}&halt=learned:3&views=1", width=390)
        want = _cli(bundled_step_bundle, puzzle, "learned:3", 1)
        assert page.evaluate("document.body.dataset.state") == "done"
        assert page.text_content("[data-testid=answer]") == want["answer"]
        assert int(page.text_content("[data-testid=steps]")) == want["steps"]
        assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth")
        assert "thread" in page.text_content("[data-testid=model]")
        page.close()


def test_page_views_solve_what_one_view_does_not_single_threaded(site, browser, bundled_step_bundle):
    """Behind a plain static server (no cross-origin isolation: one WASM thread) the page's defaults, several views,
    solve held-out puzzles on which one view fails (on 24-29 givens views solve 98-99%: benchmarks/results/views.md,
    "Solve more")."""
    from trm_edge.api import Opening, builtin_data, open_model, solve_puzzles
    from trm_edge.tasks import read_puzzles

    pairs = read_puzzles(SUDOKU, str(builtin_data("sudoku")[0]))[:16]
    one_view = solve_puzzles(open_model(str(bundled_step_bundle), Opening(backend="ort")),
                             [SUDOKU.compact(p) for p, _ in pairs], views=1)["results"]
    failed = [(p, label) for (p, label), r in zip(pairs, one_view) if not r["solved"]][:2]
    assert failed
    srv = _serve(site, isolate=False)
    try:
        for puzzle, label in failed:
            page = _open(browser, srv, f"puzzle={SUDOKU.compact(puzzle)}")
            assert page.text_content("[data-testid=answer]") == SUDOKU.compact(label)
            assert page.text_content("[data-testid=verdict]").startswith("solved")
            assert int(page.text_content("[data-testid=view]").split("/")[0]) > 1
            assert "1 thread(s)" in page.text_content("[data-testid=model]")
            page.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_page_solves_a_task_trm_edge_does_not_know_as_the_cli(browser, tmp_path_factory):
    """A generic bundle (a 24-token sorting task): the page reads its tokens, solves as ORT's Solver does, and says
    there are no rules to check the answer by; views and verify are refused in one line."""
    require_tool("npm", "fetches onnxruntime-web once")
    from test_generic import export_sort_bundle, sort_pairs

    from trm_edge.runtimes.browser import build_site

    root = tmp_path_factory.mktemp("generic")
    bundle = export_sort_bundle(root, seed=1)
    srv = _serve(build_site(bundle, root / "site"), isolate=False)
    try:
        for x in sort_pairs(2, 11)[0]:
            puzzle = " ".join(map(str, x))
            page = _open(browser, srv, f"puzzle={puzzle}&halt=learned:0")
            want = _cli(bundle, puzzle, "learned:0", 1)
            assert page.text_content("[data-testid=answer]") == want["answer"]
            assert int(page.text_content("[data-testid=steps]")) == want["steps"]
            assert page.text_content("[data-testid=verdict]").startswith("answered: the task has no rules")
            assert "24 tokens 0-11" in page.text_content("[data-testid=puzzle-label]")
            page.close()
        page = _open(browser, srv, f"puzzle={puzzle}&views=4")
        assert page.text_content("[data-testid=error]") == ("a generic task has no rules to check answers by: one "
                                                            "view, and no verify")
        page.close()
    finally:
        srv.shutdown()
        srv.server_close()
    from trm_edge.runtimes.device import CONTRACT, write_android_assets  # the app takes it too

    assets = write_android_assets(bundle, root / "assets")
    assert json.loads((assets / CONTRACT).read_text())["task"] == "generic"
    doc = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps(dict(doc, task="maze")))  # a task neither has code for
    with pytest.raises(TRMEdgeError, match="a maze bundle; the Android app solves sudoku, and generic tasks .* "
                                           "--task generic"):
        write_android_assets(bundle, root / "assets2")


@pytest.mark.parametrize("query,python", [
    (f"puzzle={EXAMPLE[:40]}x{EXAMPLE[41:]}", lambda: SUDOKU.parse(f"{EXAMPLE[:40]}x{EXAMPLE[41:]}")),
    (f"puzzle={EXAMPLE}&halt=greedy", lambda: HaltPolicy.parse("greedy", 16)),
])
def test_page_reports_bad_input_in_one_line(browser, isolated, query, python):
    page = _open(browser, isolated, query)
    with pytest.raises(TRMEdgeError) as e:
        python()
    assert page.evaluate("document.body.dataset.state") == "error"
    assert page.text_content("[data-testid=error]") == str(e.value)
    page.close()


def test_web_and_android_commands_refuse_bad_input_in_one_line(bundled_step_bundle, tmp_path, capsys):
    """Not a bundle, a folder that is not ours, a tarball that is not onnxruntime-web, a precision the bundle lacks:
    exit 2 and one line, nothing written."""
    import tarfile

    from trm_edge.cli import main

    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    fake = tmp_path / "onnxruntime-web-1.30.0.tgz"
    with tarfile.open(fake, "w:gz") as tar:
        tar.add(mine / "todo.txt", arcname="package/dist/ort.wasm.bundle.min.mjs")
    cases = [(["web", str(tmp_path), "-o", str(tmp_path / "s1")], "not a trm-edge bundle"),
             (["web", str(bundled_step_bundle), "-o", str(mine)], "refusing"),
             (["web", str(bundled_step_bundle), "-o", str(tmp_path / "s2"), "--ort-web", str(fake)], "sha512"),
             (["web", str(bundled_step_bundle), "-o", str(tmp_path / "s3"), "--precision", "int8"], "no int8"),
             (["android", str(bundled_step_bundle), "-o", str(mine)], "refusing"),
             (["serve-web", str(tmp_path), "--port", "0"], "not a trm-edge bundle")]
    for args, message in cases:
        with pytest.raises(SystemExit) as ex:
            main(args)
        err = capsys.readouterr().err.strip()
        assert ex.value.code == 2 and message in err and len(err.splitlines()) == 1, (args, err)
    assert sorted(p.name for p in mine.iterdir()) == ["todo.txt"] and (mine / "todo.txt").read_text() == "keep me"
    assert not any((tmp_path / s).exists() for s in ("s1", "s2", "s3"))
