/**
 * The app's pure Kotlin core run on a plain JVM against Python's answers: tests/test_android.py writes a replay
 * file (recorded steps of the real model plus cases), compiles this with the core, runs it and compares every line
 * it prints with what trm_edge gives on the same input. No JSON library here, so the file is plain text: one record
 * a line, fields split by single spaces, free text URL-encoded, float32 as its bits in hex.
 *
 *   record NAME PUZZLE                        a recording of one puzzle (tokens comma-separated)...
 *   step NAME PRED QBITS FINITE               ...and its steps in order (FINITE 1 or 0)
 *   solve ID NAME HALT_MAX_STEPS POLICY       -> solve ID TOKENS STEPS QBITS FAULT
 *   parse ID TEXT                             -> parse ID ok TOKENS RENDERED
 *   check ID PUZZLE ANSWER                    -> check ID true|false
 *   generic ID SEQ VOCAB TEXT                 -> generic ID ok TOKENS RENDERED (a generic task's puzzle)
 *   policy ID HALT_MAX_STEPS TEXT             -> policy ID ok KIND MAX MIN THRESHOLD_BITS VERIFY
 *   contract ID TASK SEQ VOCAB TOTAL HIDDEN HALT_MAX HALTING INPUTS OUTPUTS
 *                                             -> contract ID ok NAME... (in role order)
 *       (INPUTS, OUTPUTS: name:dtype:1x81,... in file order)
 *   energy ID T_NS:CURRENT:MV,... COUNTER_START COUNTER_END
 *                                             -> energy ID JOULES COUNTER_JOULES|none
 *
 * A refused case prints `KIND ID error MESSAGE` instead.
 */
package dev.trmedge.solver.check

import dev.trmedge.solver.core.DeviceContract
import dev.trmedge.solver.core.Energy
import dev.trmedge.solver.core.HaltPolicy
import dev.trmedge.solver.core.PowerIntegrator
import dev.trmedge.solver.core.Step
import dev.trmedge.solver.core.StepModel
import dev.trmedge.solver.core.Sudoku
import dev.trmedge.solver.core.TensorSpec
import dev.trmedge.solver.core.Tokens
import dev.trmedge.solver.core.haltingLoop
import java.io.File
import java.net.URLDecoder
import java.net.URLEncoder

/** A StepModel that plays back the real model's recorded steps; its carry is the index of the next step. */
private class Replay(val puzzle: LongArray) : StepModel<Int> {
    val steps = ArrayList<Step<Int>>()

    override fun initialCarry() = 0

    override fun step(tokens: LongArray, carry: Int): Step<Int> {
        check(tokens.contentEquals(puzzle)) { "the loop fed other tokens than the recorded puzzle's" }
        check(carry < steps.size) { "the loop asked for step ${carry + 1}, the recording has ${steps.size}" }
        return steps[carry]
    }
}

fun main(args: Array<String>) {
    require(args.size == 1) { "usage: ReplayCheck REPLAY_FILE" }
    val replays = HashMap<String, Replay>()
    for (line in File(args[0]).readLines()) {
        if (line.isBlank() || line.startsWith("#")) continue
        val f = line.split(" ")
        val out = when (f[0]) {
            "record" -> { replays[f[1]] = Replay(tokens(f[2])); null }
            "step" -> {
                val r = replays.getValue(f[1])
                r.steps.add(Step(r.steps.size + 1, tokens(f[2]), float32(f[3]), f[4] == "1"))
                null
            }
            "solve" -> orError {
                val r = replays.getValue(f[2])
                val policy = HaltPolicy.parse(text(f[4]), f[3].toInt())
                val s = haltingLoop(r, r.puzzle, policy, { Sudoku.check(r.puzzle, it) }, {})
                listOf(csv(s.tokens), s.steps.toString(), bits(s.qHalt), s.fault.toString())
            }
            "parse" -> orError {
                val t = Sudoku.parse(text(f[2]))
                val grid = Sudoku.render(t)
                for (i in 0 until Sudoku.CELLS) {
                    check(grid[Sudoku.offset(i)] == "?.123456789"[t[i].toInt()]) { "offset($i) is off" }
                }
                listOf("ok", csv(t), URLEncoder.encode(grid, "UTF-8"))
            }
            "check" -> listOf(Sudoku.check(tokens(f[2]), tokens(f[3])).toString())
            "generic" -> orError {
                val task = Tokens(f[2].toInt(), f[3].toInt())
                val t = task.parse(text(f[4]))
                listOf("ok", csv(t), URLEncoder.encode(task.render(t), "UTF-8"))
            }
            "policy" -> orError {
                val p = HaltPolicy.parse(text(f[3]), f[2].toInt())
                listOf("ok", p.kind, p.maxSteps.toString(), p.minSteps.toString(),
                    java.lang.Long.toHexString(p.threshold.toRawBits()).padStart(16, '0'), p.verify.toString())
            }
            "contract" -> orError {
                val hidden = f[6].toInt()
                val c = DeviceContract(f[2], f[3].toInt(), f[4].toInt(), f[5].toInt(), hidden, f[7].toInt(), text(f[8]),
                    DeviceContract.GraphFile("step.ort", "fp32", 0L, ""), specs(f[9]), specs(f[10]),
                    FloatArray(hidden), FloatArray(hidden))
                listOf("ok") + listOf(c.tokens, c.puzzleIds, c.carryH, c.carryL, c.nextH, c.nextL, c.pred, c.qHalt,
                    c.logits).map { it.name }
            }
            "energy" -> {
                val power = PowerIntegrator()
                for (sample in f[2].split(",")) {
                    val (t, current, mv) = sample.split(":")
                    power.add(t.toLong(), Energy.watts(current.toLong(), mv.toInt()))
                }
                val counter = Energy.counterJoules(f[3].toLong(), f[4].toLong())
                listOf(power.joules.toString(), counter?.toString() ?: "none")
            }
            else -> throw IllegalArgumentException("unknown record '${f[0]}' in: $line")
        }
        if (out != null) println((listOf(f[0], f[1]) + out).joinToString(" "))
    }
}

/** The case's fields, or "error" and the message when the core refused the input. */
private fun orError(case: () -> List<String>): List<String> = try {
    case()
} catch (e: IllegalArgumentException) {
    listOf("error", URLEncoder.encode(e.message, "UTF-8"))
}

private fun tokens(s: String) = s.split(",").map { it.toLong() }.toLongArray()

private fun csv(t: LongArray) = t.joinToString(",")

private fun text(s: String): String = URLDecoder.decode(s, "UTF-8")

private fun float32(hex: String) = java.lang.Float.intBitsToFloat(java.lang.Long.parseLong(hex, 16).toInt())

private fun bits(x: Float) = Integer.toHexString(java.lang.Float.floatToRawIntBits(x)).padStart(8, '0')

private fun specs(s: String) = s.split(",").map {
    val (name, dtype, shape) = it.split(":")
    TensorSpec(name, dtype, shape.split("x").map { d -> d.toLong() })
}
