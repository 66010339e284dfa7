package dev.trmedge.solver

import android.content.res.AssetManager
import dev.trmedge.solver.core.DeviceContract
import dev.trmedge.solver.core.TensorSpec
import java.io.IOException
import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject

/**
 * Reads assets/trm/trm-device.json into a [DeviceContract], which checks it against what the app can run. Only the
 * file's layout is known here; which tensor plays which role is DeviceContract's (by position, as the spec lists).
 */
object ContractReader {
    /** The assets folder `trm-edge android` fills. */
    const val ASSETS = "trm"
    private const val REEXPORT = "produce the assets again with trm-edge android (README)"

    fun read(assets: AssetManager): DeviceContract {
        val path = "$ASSETS/${DeviceContract.CONTRACT}"
        val text = try {
            assets.open(path).bufferedReader().use { it.readText() }
        } catch (e: IOException) {
            throw IllegalStateException("assets/$path is missing: $REEXPORT")
        }
        try {
            return parse(JSONObject(text))
        } catch (e: JSONException) {
            throw IllegalStateException("assets/$path: ${e.message}; $REEXPORT")
        }
    }

    private fun parse(o: JSONObject): DeviceContract {
        val format = o.optString("format")
        val version = o.optInt("format_version", -1)
        if (format != DeviceContract.FORMAT || version != DeviceContract.FORMAT_VERSION) {
            throw IllegalStateException("${DeviceContract.CONTRACT} is '$format' version $version, this app reads " +
                "'${DeviceContract.FORMAT}' version ${DeviceContract.FORMAT_VERSION}: $REEXPORT")
        }
        val graph = o.getJSONObject("graph")
        val init = o.getJSONObject("init")
        return DeviceContract(
            task = o.getString("task"),
            seqLen = o.getInt("seq_len"),
            vocabSize = o.getInt("vocab_size"),
            totalLen = o.getInt("total_len"),
            hiddenSize = o.getInt("hidden_size"),
            haltMaxSteps = o.getInt("halt_max_steps"),
            halting = o.getString("halting"),
            graph = DeviceContract.GraphFile(graph.getString("file"), graph.getString("precision"),
                graph.getLong("bytes"), graph.getString("sha256")),
            inputs = tensors(graph.getJSONArray("inputs")),
            outputs = tensors(graph.getJSONArray("outputs")),
            // written as the doubles that print each float32 exactly, so toFloat() gives the bundle's values back
            hInit = floats(init.getJSONArray("H_init")),
            lInit = floats(init.getJSONArray("L_init"))
        )
    }

    private fun tensors(a: JSONArray): List<TensorSpec> = (0 until a.length()).map { i ->
        val t = a.getJSONObject(i)
        val shape = t.getJSONArray("shape")
        TensorSpec(t.getString("name"), t.getString("dtype"), (0 until shape.length()).map { shape.getLong(it) })
    }

    private fun floats(a: JSONArray) = FloatArray(a.length()) { a.getDouble(it).toFloat() }
}
