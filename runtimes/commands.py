"""`trm-edge web | serve-web | android`: a bundle made into what a browser or an Android app embeds. Option parsing
only; the work is in runtimes/browser.py and runtimes/device.py. Registered by trm_edge/cli.py (`register(app)`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Annotated

import typer

from trm_edge.console import QuietOpt, err, out
from trm_edge.progress import Reporter

BundleArg = Annotated[str, typer.Argument(help="Bundle directory (from trm-edge export; sudoku).")]
Precision = Annotated[str, typer.Option(help="The step graph to embed: fp32 or one of the bundle's int8 modes.")]
OrtWeb = Annotated[str | None, typer.Option("--ort-web", help="onnxruntime-web tarball (npm pack "
                                            "onnxruntime-web@1.30.0) when npm is not on this machine.")]


def register(app: typer.Typer) -> None:
    @app.command()
    def web(bundle: BundleArg,
            out_dir: Annotated[str, typer.Option("-o", "--out", help="Site directory (new, empty or a site to "
                                                 "replace).")] = "trm-site",
            precision: Precision = "fp32", ort_web: OrtWeb = None, quiet: QuietOpt = False) -> None:
        """A self-contained static site that solves sudokus on the visitor's device (onnxruntime-web, WASM): host
        it on any static file server; index.html?puzzle=<81 chars> solves on load."""
        from trm_edge.runtimes.browser import build_site

        with Reporter("web", err, quiet, stage="building the site"):
            path = build_site(bundle, out_dir, precision, ort_web)
        out.print(f"site written to {path}: host it on any static server (`python -m http.server -d {path}` runs it "
                  f"on one WASM thread; `trm-edge serve-web {bundle}` builds and serves one with WASM threads)")

    @app.command("serve-web")
    def serve_web(bundle: BundleArg,
                  port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
                  host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 lets a phone on your "
                                                    "network open it.")] = "127.0.0.1",
                  out_dir: Annotated[str | None, typer.Option("-o", "--out", help="Keep the site here (default: "
                                                              "a temporary folder).")] = None,
                  precision: Precision = "fp32", ort_web: OrtWeb = None,
                  plain: Annotated[bool, typer.Option(help="Without the cross-origin isolation headers, as a plain "
                                                      "static host serves it (WASM then runs one thread).")] = False,
                  quiet: QuietOpt = False) -> None:
        """Build the site and serve it until Ctrl-C or SIGTERM, with the headers that let WASM use threads."""
        from trm_edge.atomic import interruptions
        from trm_edge.runtimes.browser import build_site, server

        def stop(sig: int, restore: Callable[[], None]) -> None:
            """SIGTERM as Ctrl-C, so that the temporary site is removed (SIGTERM's default action skips that)."""
            restore()  # a second signal stops at once
            raise KeyboardInterrupt

        with interruptions(stop), tempfile.TemporaryDirectory(prefix="trm-edge-site-") as tmp:
            with Reporter("serve-web", err, quiet, stage="building the site"):
                site = build_site(bundle, out_dir or f"{tmp}/site", precision, ort_web)
            shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
            with server(site, host, port, isolate=not plain) as srv:
                try:  # from the announcement on: a client may stop us as soon as it reads it
                    out.print(f"serving {site} at http://{shown}:{srv.server_address[1]}/ "
                              f"({'plain: one WASM thread' if plain else 'cross-origin isolated: WASM threads'}); "
                              "Ctrl-C stops")
                    srv.serve_forever()
                except KeyboardInterrupt:
                    out.print("stopped")

    @app.command()
    def android(bundle: BundleArg,
                out_dir: Annotated[str, typer.Option("-o", "--out", help="The app's assets folder, e.g. "
                                                     "runtimes/android/app/src/main/assets/trm.")] = "trm-android",
                precision: Precision = "fp32", quiet: QuietOpt = False) -> None:
        """The Android app's assets: the step graph in ORT format and its I/O contract (trm-device.json)."""
        from trm_edge.runtimes.device import write_android_assets

        with Reporter("android", err, quiet, stage="converting to ORT format"):
            path = write_android_assets(bundle, out_dir, precision)
        out.print(f"assets written to {path}: build the app in runtimes/android (see its README)")
