mod capi;
mod config;
mod restart;
mod sdk;
mod sessions;
mod supervision;
mod upstream;
mod validate;
