package dev.trmedge.solver.core

/**
 * Sudoku in the official TRM encoding, as trm_edge/tasks/sudoku.py has it: token 0 pad, 1 blank, digit d is d + 1;
 * 81 cells row-major. Parse errors carry the Python codec's messages word for word.
 */
object Sudoku : PuzzleTask {
    const val CELLS = 81
    const val VOCAB = 11
    const val BLANK = 1L

    private const val BLANK_HINT = "(use '.' or '0' for blanks)"
    private const val SEPARATORS = " \t|-+"
    private const val CHARS = "?.123456789" // indexed by token; pad shows as '?', as only a model's output holds it
    private const val ROW_RULE = "------+-------+------"
    private val LINE_BREAK = Regex("\r\n|\r|\n")

    /**
     * One puzzle as tokens: an 81-character line ('.' or '0' for blanks) or a 9-line grid in which spaces and the
     * box rules '|', '-', '+' are ignored, so a rendered grid pastes back in. Contradictory clues are refused,
     * since no answer could then pass [check]. Throws IllegalArgumentException with a one-line message.
     */
    override val rules = true

    override fun parse(text: String): LongArray {
        val cells = cells(text)
        val tokens = LongArray(CELLS)
        for (i in 0 until CELLS) {
            val ch = cells[i]
            if (ch != '.' && ch !in '0'..'9') {
                throw IllegalArgumentException("sudoku: illegal character '$ch' at position ${i + 1} " +
                    "(row ${i / 9 + 1}, column ${i % 9 + 1}); use 1-9 for clues $BLANK_HINT")
            }
            tokens[i] = if (ch == '.') BLANK else (ch - '0') + BLANK
        }
        for (house in HOUSES) {
            val counts = digitCounts(tokens, house.cells)
            var worst = 1
            for (d in 2..9) if (counts[d] > counts[worst]) worst = d
            if (counts[worst] > 1) {
                throw IllegalArgumentException(
                    "sudoku: contradictory clues: digit $worst appears ${counts[worst]} times in ${house.name}")
            }
        }
        return tokens
    }

    /** Filled, every row, column and box a permutation of 1..9, and every given kept. */
    override fun check(puzzle: LongArray, answer: LongArray): Boolean {
        require(puzzle.size == CELLS && answer.size == CELLS) { "sudoku: expected $CELLS tokens per grid" }
        for (i in 0 until CELLS) {
            if (answer[i] <= BLANK || answer[i] >= VOCAB || (puzzle[i] > BLANK && answer[i] != puzzle[i])) return false
        }
        return HOUSES.all { house -> digitCounts(answer, house.cells).drop(1).all { it == 1 } }
    }

    /** The grid as people read it (and [parse] reads back): ' | ' between boxes, a rule between bands. */
    override fun render(tokens: LongArray): String {
        val out = StringBuilder()
        for (r in 0 until 9) {
            if (r == 3 || r == 6) out.append(ROW_RULE).append('\n')
            for (c in 0 until 9) {
                if (c > 0) out.append(if (c % 3 == 0) " | " else " ")
                out.append(CHARS[tokens[r * 9 + c].toInt()])
            }
            if (r < 8) out.append('\n')
        }
        return out.toString()
    }

    /** Where [render] puts [cell]'s character: for highlighting cells in the rendered text. */
    override fun offset(cell: Int): Int {
        val r = cell / 9
        val c = cell % 9
        return (r + r / 3) * (ROW_RULE.length + 1) + 2 * c + 2 * (c / 3)
    }

    private fun cells(text: String): String {
        val s = text.trim()
        if (!s.contains('\n')) {
            if (s.length != CELLS) {
                throw IllegalArgumentException("sudoku: expected 81 cells, got ${s.length} $BLANK_HINT")
            }
            return s
        }
        val rows = s.split(LINE_BREAK).map { line -> line.filter { it !in SEPARATORS } }.filter { it.isNotEmpty() }
        if (rows.size != 9) {
            throw IllegalArgumentException(
                "sudoku: expected 9 grid rows, got ${rows.size} (lines of only '-', '+', '|' are rules)")
        }
        for ((i, row) in rows.withIndex()) {
            if (row.length != 9) {
                throw IllegalArgumentException(
                    "sudoku: grid row ${i + 1} has ${row.length} cells, expected 9 $BLANK_HINT")
            }
        }
        return rows.joinToString("")
    }

    /** How often each digit occurs in a house (row, column or box), indexed by digit; index 0 is unused. */
    private fun digitCounts(tokens: LongArray, cells: IntArray): IntArray {
        val counts = IntArray(10)
        for (i in cells) if (tokens[i] > BLANK) counts[(tokens[i] - BLANK).toInt()]++
        return counts
    }

    private class House(val name: String, val cells: IntArray)

    /** The 27 rows, columns and boxes, named as a user finds them in the grid, in the Python codec's order. */
    private val HOUSES: List<House> = (0 until 9).map { i -> House("row ${i + 1}", IntArray(9) { i * 9 + it }) } +
        (0 until 9).map { i -> House("column ${i + 1}", IntArray(9) { it * 9 + i }) } +
        (0 until 9).map { b ->
            val r = 3 * (b / 3)
            val c = 3 * (b % 3)
            House("box ${b + 1} (rows ${r + 1}-${r + 3}, columns ${c + 1}-${c + 3})",
                IntArray(9) { (r + it / 3) * 9 + c + it % 3 })
        }
}
