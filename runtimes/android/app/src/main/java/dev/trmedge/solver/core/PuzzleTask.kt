package dev.trmedge.solver.core

import java.math.BigInteger

/** What the app does with the contract's task: read a puzzle, show an answer, and judge it by the task's rules. */
interface PuzzleTask {
    /** Whether [check] can judge an answer: `,verify` halting and the verdict need it. */
    val rules: Boolean

    /** One puzzle as tokens; throws IllegalArgumentException with a one-line message. */
    fun parse(text: String): LongArray

    fun render(tokens: LongArray): String

    /** Whether an answer passes the task's rules (false where there are none: see [rules]). */
    fun check(puzzle: LongArray, answer: LongArray): Boolean

    /** Where [render] puts token [cell]'s character, for highlighting it; -1 where it has no single character. */
    fun offset(cell: Int): Int
}

/** The task of a contract [DeviceContract] accepted: sudoku, or any other task's tokens as they are. */
fun taskOf(contract: DeviceContract): PuzzleTask =
    if (contract.task == "sudoku") Sudoku else Tokens(contract.seqLen, contract.vocabSize)

/**
 * A task the app has no code of its own for (trm_edge/tasks/generic.py): a puzzle is its [seqLen] tokens as they are,
 * ints separated by spaces or commas or a JSON list of them, and an answer is shown the same way. It has no rules.
 * Messages are the Python codec's word for word, but for JSON the Python parser describes itself.
 */
class Tokens(val seqLen: Int, val vocabSize: Int) : PuzzleTask {
    override val rules = false

    override fun parse(text: String): LongArray {
        val s = text.trim()
        val items: List<String> = if (s.startsWith("[")) {
            if (!s.endsWith("]")) fail("not JSON; give $FORMS")
            s.substring(1, s.length - 1).split(",").map { it.trim() }.let { if (it == listOf("")) emptyList() else it }
        } else {
            if (s.startsWith("{")) fail("give the puzzle's own tokens ($FORMS)")
            s.split(SEPARATED).filter { it.isNotEmpty() }
        }
        val values = items.map { x ->
            if (INT.matches(x)) BigInteger(x)
            else if (s.startsWith("[") && !JSON_SCALAR.matches(x)) fail("not JSON; give $FORMS")
            else fail("a puzzle is a list of integer tokens; give $FORMS")
        }
        if (values.size != seqLen) {
            fail("the puzzle has ${values.size} tokens, the model reads $seqLen (pad to that length as the dataset does)")
        }
        for ((i, v) in values.withIndex()) {
            if (v.signum() < 0 || v >= BigInteger.valueOf(vocabSize.toLong())) {
                fail("token $v at position $i is outside the vocabulary 0-${vocabSize - 1}")
            }
        }
        return LongArray(seqLen) { values[it].toLong() }
    }

    override fun render(tokens: LongArray) = tokens.joinToString(" ")

    override fun check(puzzle: LongArray, answer: LongArray) = false

    override fun offset(cell: Int) = -1

    private fun fail(what: String): Nothing = throw IllegalArgumentException("generic: $what")

    private companion object {
        const val FORMS = "a JSON list of ints, ints separated by spaces or commas, or {\"input\": [...], \"label\": [...]}"
        val SEPARATED = Regex("[\\s,]+")
        val INT = Regex("-?[0-9]+")
        val JSON_SCALAR = Regex("-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?|true|false|null|\"[^\"]*\"")
    }
}
