//! Gateway integration tests: one binary, real sockets on 127.0.0.1, a real SQLite store and
//! a fake OpenAI server on loopback behind the real OpenAI provider.

mod admin;
mod capabilities;
mod context;
mod http;
mod openai;
mod routing;
mod ws;
