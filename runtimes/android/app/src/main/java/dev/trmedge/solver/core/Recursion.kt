package dev.trmedge.solver.core

/** What one supervision step gives for one puzzle. */
class Step<C>(val carry: C, val pred: LongArray, val qHalt: Float, val finite: Boolean)

/**
 * One supervision step of a TRM on one puzzle, whatever runs it: ONNX Runtime in the app, a recording of the real
 * model in the JVM checks. [C] is the model's recurrent state (the z_H and z_L carry), opaque to the loop.
 */
interface StepModel<C> {
    /** The state before the first step: H_init and L_init at every position. */
    fun initialCarry(): C

    /** One step: the next carry, predicted tokens, q_halt, and whether carry, q_halt and logits are all finite. */
    fun step(tokens: LongArray, carry: C): Step<C>
}

/**
 * A solve's answer after [steps] supervision steps and the last q_halt. [fault] is the step whose outputs were not
 * finite (0: none); such an answer is all pad, so no checker can take it for one.
 */
class Solution(pred: LongArray, val steps: Int, val qHalt: Float, val fault: Int) {
    val tokens: LongArray = if (fault > 0) LongArray(pred.size) else pred
}

/**
 * trm_edge/halting.py's halting_loop for one row: step until the policy halts, a step is not finite (a fault), or,
 * under `,verify`, the answer passes [check]. [onStep] sees the answer after every step, the recursion made
 * visible; the last one it sees is returned.
 */
fun <C> haltingLoop(
    model: StepModel<C>,
    tokens: LongArray,
    policy: HaltPolicy,
    check: ((LongArray) -> Boolean)?,
    onStep: (Solution) -> Unit
): Solution {
    require(!policy.verify || check != null) { "halting policy $policy: this solver has no checker for ',verify'" }
    var carry = model.initialCarry()
    var k = 0
    while (true) {
        k++
        val out = model.step(tokens, carry)
        carry = out.carry
        val solution = Solution(out.pred, k, out.qHalt, if (out.finite) 0 else k)
        onStep(solution)
        if (!out.finite || policy.halted(k, out.qHalt) || (policy.verify && check!!(out.pred))) return solution
    }
}
