mod capi;
mod config;
mod escape;
mod sdk;
mod sessions;
mod supervision;
mod upstream;
mod validate;
