#pragma once
/// \file
/// The torchlens version (meson.build checks that it matches the project's)
/// and the version of the JSON metadata schema (docs/json.md).

#define TORCHLENS_VERSION_MAJOR 0
#define TORCHLENS_VERSION_MINOR 2
#define TORCHLENS_VERSION_PATCH 0
#define TORCHLENS_VERSION_STRING "0.2.0"

/// Raised whenever a field of the JSON metadata changes meaning or goes away
/// (adding a field does not raise it).
#define TORCHLENS_JSON_SCHEMA_VERSION 3
