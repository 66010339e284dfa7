package dev.trmedge.solver.core

/** One graph input or output as trm-device.json names it. */
class TensorSpec(val name: String, val dtype: String, val shape: List<Long>) {
    override fun toString() = "$name $dtype $shape"
}

/**
 * trm-device.json (written by trm_edge/runtimes/device.py), checked against what this app's code can run. The
 * tensors are taken by position, in the order trm_edge/spec.py lists the step graph's: inputs (tokens, puzzle ids,
 * H carry, L carry) and outputs (next H carry, next L carry, predicted tokens, q_halt, logits). Their names come from
 * the file only, never from this code, so a re-exported model cannot drift from the app; dtypes and shapes are
 * checked here so a mismatch is refused at start, not met in the middle of a solve.
 */
class DeviceContract(
    val task: String,
    val seqLen: Int,
    val vocabSize: Int,
    val totalLen: Int,
    val hiddenSize: Int,
    val haltMaxSteps: Int,
    val halting: String,
    val graph: GraphFile,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val hInit: FloatArray,
    val lInit: FloatArray
) {
    /** The graph file beside the contract: its name, precision, size and sha256 (hex). */
    class GraphFile(val file: String, val precision: String, val bytes: Long, val sha256: String)

    val tokens get() = inputs[0]
    val puzzleIds get() = inputs[1]
    val carryH get() = inputs[2]
    val carryL get() = inputs[3]
    val nextH get() = outputs[0]
    val nextL get() = outputs[1]
    val pred get() = outputs[2]
    val qHalt get() = outputs[3]
    val logits get() = outputs[4]

    init {
        if (task != "generic" && (task != "sudoku" || seqLen != Sudoku.CELLS || vocabSize != Sudoku.VOCAB)) {
            fail("a $task model (seq_len $seqLen, vocab $vocabSize); this app solves sudoku (81 cells, vocab 11) and " +
                "generic tasks (tokens as they are) only")
        }
        val carry = listOf(1L, totalLen.toLong(), hiddenSize.toLong())
        checkRoles("input", inputs, listOf(
            Role("puzzle tokens", INT64, listOf(1L, seqLen.toLong())),
            Role("puzzle id", INT64, listOf(1L)),
            Role("H carry", FLOAT32, carry),
            Role("L carry", FLOAT32, carry)))
        checkRoles("output", outputs, listOf(
            Role("next H carry", FLOAT32, carry),
            Role("next L carry", FLOAT32, carry),
            Role("predicted tokens", INT64, listOf(1L, seqLen.toLong())),
            Role("halting logit", FLOAT32, listOf(1L)),
            Role("token logits", FLOAT32, listOf(1L, seqLen.toLong(), vocabSize.toLong()))))
        if (hInit.size != hiddenSize || lInit.size != hiddenSize) {
            fail("H_init/L_init have ${hInit.size}/${lInit.size} values, hidden_size is $hiddenSize")
        }
        try {
            HaltPolicy.parse(halting, haltMaxSteps)
        } catch (e: IllegalArgumentException) {
            fail("its halting policy: ${e.message}")
        }
    }

    private class Role(val what: String, val dtype: String, val shape: List<Long>)

    private fun checkRoles(side: String, got: List<TensorSpec>, want: List<Role>) {
        if (got.size != want.size) {
            fail("the step graph has ${got.size} ${side}s, this app feeds and reads ${want.size} " +
                "(${want.joinToString { it.what }})")
        }
        for ((i, role) in want.withIndex()) {
            val t = got[i]
            if (t.dtype != role.dtype || t.shape != role.shape) {
                fail("$side ${i + 1} (${role.what}) is $t, this app needs ${role.dtype} ${role.shape}")
            }
        }
    }

    private fun fail(what: String): Nothing = throw IllegalArgumentException(
        "$CONTRACT: $what; export the assets again with this app's version of trm-edge (README)")

    companion object {
        const val CONTRACT = "trm-device.json"
        const val FORMAT = "trm-edge-device"
        const val FORMAT_VERSION = 1
        const val INT64 = "int64"
        const val FLOAT32 = "float32"
    }
}
