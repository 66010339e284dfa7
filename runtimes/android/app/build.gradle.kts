// AGP 9 compiles Kotlin itself (built-in Kotlin): no Kotlin plugin to apply.
plugins {
    id("com.android.application")
}

android {
    namespace = "dev.trmedge.solver"
    compileSdk = 36

    defaultConfig {
        applicationId = "dev.trmedge.solver"
        minSdk = 24
        targetSdk = 36
        versionCode = 1
        versionName = "0.1.0"
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    // step.ort is read whole into memory at start: stored, not deflated, in the APK
    androidResources {
        noCompress += "ort"
    }
}

dependencies {
    // Keep at the onnxruntime version that wrote step.ort (pip's onnxruntime when the assets were made): an older
    // runtime may not read a newer ORT format.
    implementation("com.microsoft.onnxruntime:onnxruntime-android:1.32.0")
}
