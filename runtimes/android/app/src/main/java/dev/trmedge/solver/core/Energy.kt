package dev.trmedge.solver.core

/**
 * Energy from a phone's battery fuel gauge: coarse (gauges update every few hundred ms and see the whole phone,
 * screen included) but a measurement, not a model. The math lives here, free of android.*, so the JVM checks test
 * it; EnergyMeter feeds it readings.
 */
object Energy {
    /**
     * Watts from a gauge's current and voltage (mV). BatteryManager documents the current in µA, but some makers
     * report mA, and the sign differs between makers: so the magnitude, read as mA below 10000 (10 A: no phone
     * draws that) as trm_edge's Python meter does.
     */
    fun watts(current: Long, milliVolts: Int): Double {
        val i = Math.abs(current.toDouble())
        val amps = if (i >= 1e4) i / 1e6 else i / 1e3
        return milliVolts / 1e3 * amps
    }

    /**
     * Joules between two readings of the gauge's energy counter (nWh), or null where it has none: Android reports
     * Long.MIN_VALUE (or 0 before API 28) then, and a counter that did not move says nothing about the interval.
     */
    fun counterJoules(startNwh: Long, endNwh: Long): Double? =
        if (startNwh == Long.MIN_VALUE || endNwh == Long.MIN_VALUE || startNwh == 0L || endNwh == startNwh) null
        else Math.abs(endNwh - startNwh) * 3.6e-6

    /** The status line's words for one solve's [joules] (null: the gauge gave nothing). */
    fun describe(joules: Double?, charging: Boolean): String = when {
        charging -> "energy: charging: not a measurement (unplug to measure)"
        joules == null -> "energy: this phone's battery gauge reports no current"
        else -> "energy ≈ ${Math.round(joules * 1e3)} mJ per solve (battery gauge, coarse)"
    }
}

/** Power samples integrated by trapezoids, as the Python meter does: joules between the first and last sample. */
class PowerIntegrator {
    var joules = 0.0
        private set
    var samples = 0
        private set
    private var lastNanos = 0L
    private var lastWatts = 0.0

    fun add(nanos: Long, watts: Double) {
        if (samples > 0) joules += (nanos - lastNanos) / 1e9 * (watts + lastWatts) / 2
        lastNanos = nanos
        lastWatts = watts
        samples++
    }
}
