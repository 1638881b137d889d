mod browser;
mod cron;
mod exec;
mod memory;
mod skills;
mod web_fetch;
