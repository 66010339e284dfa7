package dev.trmedge.solver.core

import java.math.BigInteger

/**
 * When a solve stops: the same grammar and decisions as trm_edge/halting.py's HaltPolicy, so a policy typed in
 * the app means what it means to `trm-edge solve --halt`. `fixed[:N]` runs N supervision steps; `learned[:TAU]`
 * stops once the halting head's q_halt logit exceeds TAU (within min/max steps); `,verify` also stops at the
 * first answer the sudoku rules accept.
 */
class HaltPolicy(
    val kind: String,
    val maxSteps: Int,
    val threshold: Double,
    val minSteps: Int,
    val verify: Boolean
) {
    // numpy compares float32 q_halt with the threshold in float32: round it once the same way.
    private val threshold32 = threshold.toFloat()

    /** Whether the row stops after supervision step [step] (1-based) that gave [qHalt]. */
    fun halted(step: Int, qHalt: Float): Boolean = step >= maxSteps || (qHalt > threshold32 && step >= minSteps)

    override fun toString(): String {
        val text = if (kind == FIXED) {
            "$FIXED:$maxSteps"
        } else {
            "$LEARNED:${number(threshold)},min=$minSteps,max=$maxSteps"
        }
        return if (verify) "$text,verify" else text
    }

    companion object {
        const val FIXED = "fixed"
        const val LEARNED = "learned"
        /** Models train with 16 steps; a typo of 10^9 must not run for days. */
        const val MAX_STEPS = 256
        private const val USAGE = "use fixed[:N] or learned[:TAU][,min=K][,max=M], then ,verify to stop at an " +
            "answer the rules accept; e.g. fixed:16 or learned:3,max=6,verify"

        /** Parses [text]; N and max default to the model's [haltMaxSteps]. Throws IllegalArgumentException. */
        fun parse(text: String, haltMaxSteps: Int): HaltPolicy {
            val parts = text.trim().split(",").map { it.trim() }
            val verify = parts.drop(1).contains("verify")
            val opts = parts.drop(1).filter { it != "verify" }
            val colon = parts[0].indexOf(':')
            val kind = if (colon < 0) parts[0] else parts[0].substring(0, colon)
            val arg = if (colon < 0) "" else parts[0].substring(colon + 1)
            // Unbounded until range-checked, so an error quotes a huge number as typed, as Python does.
            val max: BigInteger
            val min: BigInteger
            val threshold: Double
            when {
                kind == FIXED && opts.isEmpty() -> {
                    max = if (arg == "") haltMaxSteps.toBigInteger() else integer(arg, text)
                    min = BigInteger.ONE
                    threshold = Double.POSITIVE_INFINITY
                }
                kind == LEARNED -> {
                    val kw = HashMap<String, String>()
                    for (o in opts) {
                        val kv = o.split("=", limit = 2)
                        if (kv.size != 2 || (kv[0] != "min" && kv[0] != "max")) throw notUnderstood(text)
                        kw[kv[0]] = kv[1]
                    }
                    max = kw["max"]?.let { integer(it, text) } ?: haltMaxSteps.toBigInteger()
                    min = kw["min"]?.let { integer(it, text) } ?: BigInteger.ONE
                    threshold = if (arg == "") 0.0 else decimal(arg, text)
                }
                else -> throw notUnderstood(text)
            }
            if (min < BigInteger.ONE || min > max || max > MAX_STEPS.toBigInteger()) {
                throw IllegalArgumentException(
                    "halting policy '$text': need 1 <= min <= max <= $MAX_STEPS steps, got min=$min max=$max")
            }
            if (threshold.isNaN()) {
                throw IllegalArgumentException("halting policy '$text': the threshold must be a number, not NaN")
            }
            return HaltPolicy(kind, max.toInt(), threshold, min.toInt(), verify)
        }

        private fun notUnderstood(text: String) =
            IllegalArgumentException("halting policy '$text' not understood: $USAGE")

        private val INTEGER = Regex("[+-]?\\d(_?\\d)*")
        private val DECIMAL = Regex("[+-]?(\\d(_?\\d)*(\\.(\\d(_?\\d)*)?)?|\\.\\d(_?\\d)*)([eE][+-]?\\d(_?\\d)*)?")

        /** Python's int(): surrounding spaces, a sign and digit-separating underscores allowed. */
        private fun integer(s: String, text: String): BigInteger {
            val t = s.trim()
            if (!INTEGER.matches(t)) throw notUnderstood(text)
            return t.replace("_", "").toBigInteger()
        }

        /** Python's float(): as int() plus fractions, exponents, inf, infinity and nan in any case. */
        private fun decimal(s: String, text: String): Double {
            val t = s.trim()
            val unsigned = t.trimStart('+', '-')
            val negative = t.startsWith("-")
            return when {
                unsigned.length + 1 < t.length -> throw notUnderstood(text)
                unsigned.equals("inf", true) || unsigned.equals("infinity", true) ->
                    if (negative) Double.NEGATIVE_INFINITY else Double.POSITIVE_INFINITY
                unsigned.equals("nan", true) -> Double.NaN
                DECIMAL.matches(t) -> t.replace("_", "").toDouble()
                else -> throw notUnderstood(text)
            }
        }

        private fun number(x: Double): String =
            if (x == Math.rint(x) && Math.abs(x) < 1e15) x.toLong().toString() else x.toString()
    }
}
