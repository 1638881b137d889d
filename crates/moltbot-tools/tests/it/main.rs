mod browser;
mod cron;
mod skills;
mod web_fetch;
