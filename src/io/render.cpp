// Rendering through Graphviz's libraries (libgvc + cgraph): DOT text from
// torchlens/io/dot.hpp → agmemread → gvLayout → gvRender*. Compiled without
// Graphviz when the `graphviz` feature is off; then every entry point throws.
#include <torchlens/io/render.hpp>
#include <torchlens/torch_error.hpp>

#include <torchlens/io/dot.hpp>
#include <torchlens/log/model_log.hpp>

#include <c10/util/Exception.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>

#ifndef TORCHLENS_HAVE_GRAPHVIZ
#define TORCHLENS_HAVE_GRAPHVIZ 0
#endif

#if TORCHLENS_HAVE_GRAPHVIZ
#include <graphviz/cgraph.h>
#include <graphviz/gvc.h>
#endif

namespace torchlens::io {

namespace {

std::string format_of(const RenderOptions& options) {
  if (!options.format().empty()) return options.format();
  const std::string& path = options.path();
  const auto dot = path.find_last_of('.');
  const auto slash = path.find_last_of('/');
  TORCHLENS_CHECK(dot != std::string::npos && (slash == std::string::npos || dot > slash),
                  "cannot tell the format of '", path,
                  "': give it an extension (.svg, .png, .pdf) or set RenderOptions::format");
  return path.substr(dot + 1);
}

#if TORCHLENS_HAVE_GRAPHVIZ

/// One Graphviz context for the whole process, used by one render at a time.
/// libgvc keeps global state (error buffer, plugin caches), so calls are
/// serialised; and its pango plugin caches a pointer to the last font name,
/// which lives in the context's font dictionary: freeing a context and making
/// a new one leaves that pointer dangling (a use-after-free AddressSanitizer
/// reports on the second render in a process; Graphviz 2.42). The context is
/// therefore made once and never freed, as the `dot` program does.
std::unique_lock<std::mutex> lock_graphviz() {
  static std::mutex m;
  return std::unique_lock<std::mutex>(m);
}
GVC_t* shared_context() {
  static GVC_t* const gvc = gvContext();
  TORCHLENS_CHECK(gvc != nullptr, "gvContext() failed");
  return gvc;
}

/// A parsed graph and its layout, holding the Graphviz lock.
class Layout {
 public:
  Layout(const std::string& dot, const std::string& engine)
      : lock_(lock_graphviz()), gvc_(shared_context()) {
    agseterr(AGMAX); // keep messages for aglasterr(), print nothing
    graph_ = agmemread(dot.c_str());
    TORCHLENS_CHECK(graph_ != nullptr, "Graphviz could not parse the DOT text: ", last_error());
    if (gvLayout(gvc_, graph_, engine.c_str()) != 0) {
      const std::string error = last_error();
      agclose(graph_); // the destructor does not run for a throwing constructor
      TORCHLENS_CHECK(false, "layout engine '", engine, "' failed: ", error);
    }
    laid_out_ = true;
  }
  ~Layout() {
    if (laid_out_) gvFreeLayout(gvc_, graph_);
    if (graph_) agclose(graph_);
  }
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;

  void write(const std::string& format, const std::string& path) {
    TORCHLENS_CHECK(gvRenderFilename(gvc_, graph_, format.c_str(), path.c_str()) == 0,
                    "could not write '", path, "' as ", format, ": ", last_error());
  }
  std::string data(const std::string& format) {
    char* bytes = nullptr;
    unsigned int length = 0;
    TORCHLENS_CHECK(gvRenderData(gvc_, graph_, format.c_str(), &bytes, &length) == 0,
                    "could not render as ", format, ": ", last_error());
    std::string out(bytes, length);
    gvFreeRenderData(bytes);
    return out;
  }

 private:
  static std::string last_error() {
    char* e = aglasterr(); // malloc'd: ours to free
    std::string s = e ? e : "(no message)";
    std::free(e);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }
  std::unique_lock<std::mutex> lock_;
  GVC_t* gvc_ = nullptr;
  graph_t* graph_ = nullptr;
  bool laid_out_ = false;
};

#endif

[[noreturn]] void unavailable() {
  TORCHLENS_CHECK(false,
                  "torchlens was built without Graphviz (libgvc not found or the `graphviz` "
                  "Meson feature disabled); install libgraphviz-dev and reconfigure with "
                  "-Dgraphviz=enabled, or write DOT with torchlens::io::write_dot");
}

} // namespace

bool render_available() noexcept {
  return TORCHLENS_HAVE_GRAPHVIZ != 0;
}

std::string auto_engine(std::size_t drawn_nodes) {
  return drawn_nodes > kDotNodeLimit ? "sfdp" : "dot";
}

void render_dot(const std::string& dot, const RenderOptions& options) {
  TORCHLENS_CHECK(!options.path().empty(), "RenderOptions::path is empty");
  const std::string format = format_of(options);
#if TORCHLENS_HAVE_GRAPHVIZ
  Layout layout(dot, options.engine().empty() ? "dot" : options.engine());
  layout.write(format, options.path());
#else
  (void)dot;
  unavailable();
#endif
}

std::string render_dot_to_string(const std::string& dot, const std::string& format,
                                 const std::string& engine) {
#if TORCHLENS_HAVE_GRAPHVIZ
  Layout layout(dot, engine.empty() ? "dot" : engine);
  return layout.data(format);
#else
  (void)dot;
  (void)format;
  (void)engine;
  unavailable();
#endif
}

void render(const ModelGraph& graph, const RenderOptions& options) {
  if (!render_available()) unavailable();
  const DotGraph drawing = build_dot_graph(graph, options.dot());
  std::ostringstream dot;
  write_dot(dot, drawing);
  RenderOptions o = options;
  if (o.engine().empty()) o.engine(auto_engine(boost::num_vertices(drawing)));
  render_dot(dot.str(), o);
}

void render(const ModelLog& log, const RenderOptions& options) {
  if (!options.dot().gradient_layers().empty() || !log.tracks_gradients()) {
    render(log.graph(), options);
    return;
  }
  RenderOptions with_gradients = options;
  with_gradients.dot().gradient_layers(log.gradient_layers()); // drawn as backward edges
  render(log.graph(), with_gradients);
}

} // namespace torchlens::io
