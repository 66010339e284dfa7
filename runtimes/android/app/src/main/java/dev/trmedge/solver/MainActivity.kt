package dev.trmedge.solver

import android.app.Activity
import android.content.ClipboardManager
import android.graphics.Color
import android.graphics.Typeface
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.os.SystemClock
import android.text.SpannableString
import android.text.Spanned
import android.text.style.ForegroundColorSpan
import android.text.style.StyleSpan
import android.util.Log
import android.widget.Button
import android.widget.EditText
import android.widget.TextView
import dev.trmedge.solver.core.HaltPolicy
import dev.trmedge.solver.core.PuzzleTask
import dev.trmedge.solver.core.Solution
import dev.trmedge.solver.core.Sudoku
import dev.trmedge.solver.core.haltingLoop
import dev.trmedge.solver.core.taskOf
import java.util.Locale
import java.util.concurrent.Executors

/**
 * Type or paste a sudoku, press Solve: the model's answer is drawn after every supervision step (givens bold, cells
 * the last step changed in colour), then the steps used, the time per solve and the battery gauge's energy. A model
 * of a task the app has no code for (generic) reads and shows its tokens as they are, with no rules to judge by.
 * Model work runs on one worker thread; the screen replays its steps at a pace people can follow.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()
    private val ui = Handler(Looper.getMainLooper())
    private var model: OrtStepModel? = null // all three set on the main thread once the worker has loaded them
    private var meter: EnergyMeter? = null
    private var task: PuzzleTask? = null

    private lateinit var puzzle: EditText
    private lateinit var policy: EditText
    private lateinit var solve: Button
    private lateinit var grid: TextView
    private lateinit var status: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        puzzle = findViewById(R.id.puzzle)
        policy = findViewById(R.id.policy)
        solve = findViewById(R.id.solve)
        grid = findViewById(R.id.grid)
        status = findViewById(R.id.status)
        findViewById<Button>(R.id.paste).setOnClickListener { paste() }
        solve.setOnClickListener { startSolve() }
        solve.isEnabled = false
        status.setText(R.string.loading)
        worker.execute {
            try {
                val contract = ContractReader.read(assets)
                val m = OrtStepModel(assets, contract, THREADS)
                // the first run allocates ORT's buffers: keep that out of the first solve's time
                m.step(LongArray(contract.seqLen), m.initialCarry())
                val e = EnergyMeter(this)
                ui.post { ready(m, e) }
            } catch (e: Exception) {
                Log.e(TAG, "loading the model failed", e)
                ui.post { status.text = e.message ?: e.toString() }
            }
        }
    }

    override fun onDestroy() {
        val m = model
        val e = meter
        worker.execute { m?.close(); e?.close() } // queued behind a solve still running
        worker.shutdown()
        ui.removeCallbacksAndMessages(null)
        super.onDestroy()
    }

    private fun ready(m: OrtStepModel, e: EnergyMeter) {
        model = m
        meter = e
        val t = taskOf(m.contract)
        task = t
        if (t !is Sudoku) {
            puzzle.setText("")
            puzzle.hint = getString(R.string.tokens_hint, m.contract.seqLen, m.contract.vocabSize - 1)
        }
        if (policy.text.isEmpty()) policy.setText(m.contract.halting)
        status.text = getString(R.string.ready, m.contract.task, m.contract.graph.precision, m.contract.halting)
        solve.isEnabled = true
    }

    private fun paste() {
        val clip = getSystemService(ClipboardManager::class.java).primaryClip
        if (clip != null && clip.itemCount > 0) puzzle.setText(clip.getItemAt(0).coerceToText(this))
    }

    private fun startSolve() {
        val m = model ?: return
        val e = meter ?: return
        val t = task ?: return
        val tokens: LongArray
        val halt: HaltPolicy
        try {
            tokens = t.parse(puzzle.text.toString())
            halt = HaltPolicy.parse(policy.text.toString(), m.contract.haltMaxSteps)
            require(t.rules || !halt.verify) { "a ${m.contract.task} task has no rules to check answers by: no verify" }
        } catch (x: IllegalArgumentException) {
            status.text = x.message
            return
        }
        solve.isEnabled = false
        worker.execute { solveOnWorker(m, e, t, tokens, halt) }
    }

    /** Solves on the worker thread; every step's answer is queued for the screen at least FRAME_MS apart. */
    private fun solveOnWorker(m: OrtStepModel, e: EnergyMeter, t: PuzzleTask, tokens: LongArray, halt: HaltPolicy) {
        var frame = SystemClock.uptimeMillis()
        var previous: LongArray? = null
        fun later(action: Runnable) {
            frame = maxOf(SystemClock.uptimeMillis(), frame + FRAME_MS)
            ui.postAtTime(action, frame)
        }
        try {
            val t0 = SystemClock.elapsedRealtimeNanos()
            val (s, energy) = e.measure {
                haltingLoop(m, tokens, halt, { t.check(tokens, it) }) { step ->
                    val before = previous
                    previous = step.tokens
                    later { show(t, tokens, step, before, halt) }
                }
            }
            val ms = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
            Log.i(TAG, String.format(Locale.ROOT, "solve: %d steps (%s), fault %d, %.1f ms, energy %s J (%s%s)",
                s.steps, halt, s.fault, ms, energy.joules, energy.source, if (energy.charging) ", charging" else ""))
            later { finish(t, tokens, s, ms, energy) }
        } catch (x: Exception) {
            Log.e(TAG, "solve failed", x)
            later {
                status.text = x.message ?: x.toString()
                solve.isEnabled = true
            }
        }
    }

    private fun show(t: PuzzleTask, puzzle: LongArray, s: Solution, before: LongArray?, halt: HaltPolicy) {
        val text = SpannableString(t.render(s.tokens))
        for (i in puzzle.indices) {
            val at = t.offset(i)
            val span: Any = when {
                at < 0 -> continue
                puzzle[i] > Sudoku.BLANK -> StyleSpan(Typeface.BOLD)
                before != null && before[i] != s.tokens[i] -> ForegroundColorSpan(CHANGED)
                else -> continue
            }
            text.setSpan(span, at, at + 1, Spanned.SPAN_EXCLUSIVE_EXCLUSIVE)
        }
        grid.text = text
        status.text = getString(R.string.step, s.steps, halt.maxSteps, s.qHalt)
    }

    private fun finish(t: PuzzleTask, puzzle: LongArray, s: Solution, ms: Double, energy: EnergyMeter.Reading) {
        val verdict = when {
            s.fault > 0 -> getString(R.string.fault, s.fault)
            !t.rules -> getString(R.string.answered)
            t.check(puzzle, s.tokens) -> getString(R.string.solved)
            else -> getString(R.string.unsolved)
        }
        status.text = getString(R.string.done, verdict, s.steps, ms, energy.toString())
        solve.isEnabled = true
    }

    private companion object {
        const val TAG = "trm-edge"
        /** ORT intra-op threads: one step is ~1M parameters, too small to keep more big cores busy. */
        const val THREADS = 2
        /** The screen shows each step at least this long, so the recursion can be watched. */
        const val FRAME_MS = 150L
        val CHANGED = Color.rgb(0xD8, 0x43, 0x15)
    }
}
