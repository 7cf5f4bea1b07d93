mod capi;
mod config;
mod sdk;
mod sessions;
mod supervision;
mod upstream;
mod validate;
