mod browser;
mod cron;
mod exec;
mod skills;
mod web_fetch;
