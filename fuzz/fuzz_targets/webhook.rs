#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| moltbot_fuzz::webhook(data));
