//! Which Flowline a run was made with (summary.json's `meta.revision`).

/// The source revision of this binary: `git describe` of the checkout it was built from
/// (the normal `cargo run` case), else the package version.
pub fn revision() -> String {
    let out = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => format!("v{}", env!("CARGO_PKG_VERSION")),
    }
}
