#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().expect("scratch dir");
    gantry_fuzz::run("documents", data, scratch.path());
});
