package dev.trmedge.solver

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.OrtSession.SessionOptions
import ai.onnxruntime.TensorInfo
import ai.onnxruntime.ValueInfo
import android.content.res.AssetManager
import dev.trmedge.solver.core.DeviceContract
import dev.trmedge.solver.core.Step
import dev.trmedge.solver.core.StepModel
import dev.trmedge.solver.core.TensorSpec
import java.nio.FloatBuffer
import java.nio.LongBuffer
import java.security.MessageDigest

/**
 * The step graph (assets/trm/step.ort) in an onnxruntime-android session, fed and read by the names and shapes of
 * [contract]. One supervision step a call; the carry goes back in as the next call's input. Not thread-safe in use:
 * the app calls it from one worker thread.
 */
class OrtStepModel(assets: AssetManager, val contract: DeviceContract, threads: Int) : StepModel<OrtStepModel.Carry>,
    AutoCloseable {

    /** z_H and z_L of one puzzle, [1, total_len, hidden_size] each, row-major. */
    class Carry(val h: FloatArray, val l: FloatArray)

    private val env = OrtEnvironment.getEnvironment()
    private val session: OrtSession

    init {
        val path = "${ContractReader.ASSETS}/${contract.graph.file}"
        val bytes = assets.open(path).use { it.readBytes() }
        val sha256 = MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it) }
        check(bytes.size.toLong() == contract.graph.bytes && sha256 == contract.graph.sha256) {
            "assets/$path is not the graph trm-device.json describes (size or sha256 differ): copy both files from " +
                "one run of trm-edge android"
        }
        session = SessionOptions().use { options ->
            options.setIntraOpNumThreads(threads)
            options.addConfigEntry("session.load_model_format", "ORT")
            env.createSession(bytes, options)
        }
        checkIo("input", session.inputInfo.mapValues { it.value.info }, contract.inputs)
        checkIo("output", session.outputInfo.mapValues { it.value.info }, contract.outputs)
    }

    override fun initialCarry(): Carry {
        val n = contract.totalLen * contract.hiddenSize
        return Carry(FloatArray(n) { contract.hInit[it % contract.hiddenSize] },
            FloatArray(n) { contract.lInit[it % contract.hiddenSize] })
    }

    override fun step(tokens: LongArray, carry: Carry): Step<Carry> {
        val c = contract
        val feeds = mapOf(
            c.tokens.name to OnnxTensor.createTensor(env, LongBuffer.wrap(tokens), dims(c.tokens)),
            // the bundled sudoku model has one puzzle identifier, 0, as trm_edge's solvers feed it
            c.puzzleIds.name to OnnxTensor.createTensor(env, LongBuffer.wrap(longArrayOf(0L)), dims(c.puzzleIds)),
            c.carryH.name to OnnxTensor.createTensor(env, FloatBuffer.wrap(carry.h), dims(c.carryH)),
            c.carryL.name to OnnxTensor.createTensor(env, FloatBuffer.wrap(carry.l), dims(c.carryL))
        )
        try {
            session.run(feeds).use { out ->
                fun tensor(t: TensorSpec) = out.get(t.name).get() as OnnxTensor
                fun floats(t: TensorSpec): FloatArray {
                    val b = tensor(t).floatBuffer
                    return FloatArray(b.remaining()).also { b.get(it) }
                }
                val h = floats(c.nextH)
                val l = floats(c.nextL)
                val q = floats(c.qHalt)[0]
                val predBuffer = tensor(c.pred).longBuffer
                val pred = LongArray(predBuffer.remaining()).also { predBuffer.get(it) }
                val finite = q.isFinite() && allFinite(h) && allFinite(l) && allFinite(floats(c.logits))
                return Step(Carry(h, l), pred, q, finite)
            }
        } finally {
            feeds.values.forEach { it.close() }
        }
    }

    override fun close() = session.close()

    /** The session must hold every tensor the contract names, with its dtype, rank and fixed sizes (batch may be
     *  free): a mismatch is refused here, not met in the middle of a solve. */
    private fun checkIo(side: String, have: Map<String, ValueInfo>, want: List<TensorSpec>) {
        for (t in want) {
            val info = have[t.name] as? TensorInfo
            val shape = info?.shape ?: longArrayOf()
            val type = if (t.dtype == DeviceContract.INT64) OnnxJavaType.INT64 else OnnxJavaType.FLOAT
            val fits = info != null && info.type == type && shape.size == t.shape.size &&
                shape.indices.all { shape[it] < 0 || shape[it] == t.shape[it] }
            check(fits) {
                "step.ort's $side ${t.name} is ${info ?: "missing"}, trm-device.json says $t: copy both files from " +
                    "one run of trm-edge android"
            }
        }
    }

    private fun dims(t: TensorSpec) = t.shape.toLongArray()

    private fun allFinite(a: FloatArray) = a.all { it.isFinite() }
}
