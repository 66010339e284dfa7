package dev.trmedge.solver

import android.content.Context
import android.content.Intent
import android.content.IntentFilter
import android.os.BatteryManager
import dev.trmedge.solver.core.Energy
import dev.trmedge.solver.core.PowerIntegrator
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit

/**
 * The battery fuel gauge sampled on its own thread while a solve runs. Prefers the gauge's energy counter where it
 * has one that moves; else integrates |current| x voltage. The voltage is read once per solve from the sticky
 * ACTION_BATTERY_CHANGED broadcast (a cell's voltage hardly moves in a second, and the broadcast is costly to read).
 */
class EnergyMeter(context: Context) {
    /** One solve's energy; [joules] null where the gauge gave nothing usable. */
    class Reading(val joules: Double?, val source: String, val charging: Boolean) {
        override fun toString() = Energy.describe(joules, charging)
    }

    private val app = context.applicationContext
    private val battery = app.getSystemService(BatteryManager::class.java)
    private val sampler = Executors.newSingleThreadScheduledExecutor { r ->
        Thread(r, "trm-energy").apply { isDaemon = true }
    }

    fun <T> measure(block: () -> T): Pair<T, Reading> {
        val status = app.registerReceiver(null, IntentFilter(Intent.ACTION_BATTERY_CHANGED))
        val milliVolts = status?.getIntExtra(BatteryManager.EXTRA_VOLTAGE, 0) ?: 0
        // plugged in, the gauge sees the charger's current too
        val charging = (status?.getIntExtra(BatteryManager.EXTRA_PLUGGED, 0) ?: 0) != 0
        val power = PowerIntegrator() // touched on the sampler thread only
        val sample = Runnable {
            val current = battery.getLongProperty(BatteryManager.BATTERY_PROPERTY_CURRENT_NOW)
            if (current != Long.MIN_VALUE && milliVolts > 0) {
                power.add(System.nanoTime(), Energy.watts(current, milliVolts))
            }
        }
        val counterStart = battery.getLongProperty(BatteryManager.BATTERY_PROPERTY_ENERGY_COUNTER)
        val task = sampler.scheduleAtFixedRate(sample, 0, SAMPLE_MS, TimeUnit.MILLISECONDS)
        val result = try {
            block()
        } finally {
            task.cancel(false)
            sampler.submit(sample).get() // the closing sample, queued behind any running one
        }
        val counterEnd = battery.getLongProperty(BatteryManager.BATTERY_PROPERTY_ENERGY_COUNTER)
        val counter = Energy.counterJoules(counterStart, counterEnd)
        val reading = when {
            counter != null -> Reading(counter, "energy counter", charging)
            power.samples >= 2 && power.joules > 0 ->
                Reading(power.joules, "current x voltage, ${power.samples} samples", charging)
            else -> Reading(null, "no gauge reading", charging)
        }
        return Pair(result, reading)
    }

    fun close() {
        sampler.shutdownNow()
    }

    private companion object {
        const val SAMPLE_MS = 15L
    }
}
