//! The simulator: a faithful server of the WeChat web protocol (spec/wechat-web.md §10) on plain
//! HTTP, with a JSON test-control API under `/__sim/`. Written from the spec only: nothing here
//! imports `crate::wechat` (DESIGN §3.1).

pub mod wehub;
