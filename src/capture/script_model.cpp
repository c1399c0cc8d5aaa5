// The per-model cache of capture copies (see script_model.hpp).

#include "script_model.hpp"

#include "torchscript_index.hpp"

#include <torchlens/torch_error.hpp>

#include <torch/csrc/jit/api/module.h>

#include <algorithm>
#include <list>
#include <mutex>
#include <utility>
#include <vector>

namespace torchlens::detail {

namespace {

using ObjectPtr = c10::intrusive_ptr<c10::ivalue::Object>;

/// The module objects under `o`, in Module::modules() order (itself first, then
/// each submodule slot depth first), read from the slots directly: walking
/// modules() costs 25 µs on a small TransformerEncoder, on every lease.
void collect_modules(const ObjectPtr& o, std::vector<ObjectPtr>& out) {
  out.push_back(o);
  const auto& type = o->type();
  const std::size_t slots = o->slots().size();
  for (std::size_t s = 0; s < slots; ++s) {
    if (type->getAttribute(s)->is_module()) collect_modules(o->getSlot(s).toObject(), out);
  }
}

std::vector<ObjectPtr> module_objects(const torch::jit::Module& m) {
  std::vector<ObjectPtr> out;
  collect_modules(m._ivalue(), out);
  return out;
}

/// What forward reassigned on the copy (`self.buf = ...`), put on the model so
/// the caller sees the effects of the run it asked for; slot by slot: the copy
/// (Module::clone) has the model's attributes in the model's slot order, as
/// refresh() relies on (by name it cost 90 µs per lease on a small TransformerEncoder).
void copy_back(const std::vector<ObjectPtr>& copy, const std::vector<ObjectPtr>& model) {
  for (std::size_t i = 0; i < std::min(copy.size(), model.size()); ++i) {
    const auto& from = copy[i];
    const auto& to = model[i];
    const std::size_t slots = std::min(from->slots().size(), to->slots().size());
    for (std::size_t s = 0; s < slots; ++s) {
      const c10::IValue& v = from->getSlot(s);
      // submodules are the copy's own objects; the rest is shared or reassigned
      if (v.isObject()) continue;
      if (!to->getSlot(s).is(v)) to->setSlot(s, v);
    }
  }
}

/// Values whose change makes the description stale: tensors and lists (of
/// tensors: a scripted LSTM's `_flat_weights`).
bool described(const c10::IValue& v) {
  return v.isTensor() || v.isTensorList() || v.isList();
}

constexpr std::size_t kMaxEntries = 4;

/// Held by every read and write torchlens makes of a caller's model's
/// attribute slots (collecting its modules, refreshing a copy from it, copying
/// one, copying back). Two leases of one model on two threads otherwise race on
/// a slot forward reassigns: one lease's copy_back replaces the value another's
/// refresh or copy is reading, which then copies a freed tensor.
std::mutex& model_slots_mutex() {
  static auto* m = new std::mutex(); // never destroyed: leases may end during exit
  return *m;
}

} // namespace

torch::jit::Module guarded_capture_copy(const torch::jit::Module& m) {
  std::lock_guard<std::mutex> reading(model_slots_mutex());
  return capture_copy(m);
}

struct ScriptLease::Entry {
  c10::weak_intrusive_ptr<c10::ivalue::Object> model; // the caller's root object
  std::vector<std::pair<const c10::ivalue::Object*, const c10::ClassType*>> shape;
  torch::jit::Module copy;
  torch::jit::Method forward;          // the copy's
  std::vector<ObjectPtr> copy_objects; // in the model's modules() order
  ModelDescription description;
  bool busy = false;

  /// `objects`: the model's modules, collected under model_slots_mutex.
  Entry(const torch::jit::Module& m, const std::vector<ObjectPtr>& objects)
      : model(m._ivalue()), copy(guarded_capture_copy(m)), forward(copy.get_method("forward")) {
    for (const auto& o : objects) shape.emplace_back(o.get(), o->type().get());
    copy_objects = module_objects(copy);
    description = describe(copy);
    description.script_index = std::make_shared<const TorchScriptIndex>(copy);
  }

  /// The model still has the module objects (and types) the copy was made from.
  bool same_modules(const std::vector<ObjectPtr>& objects) const {
    if (objects.size() != shape.size() || copy_objects.size() != shape.size()) return false;
    for (std::size_t i = 0; i < objects.size(); ++i) {
      if (objects[i].get() != shape[i].first || objects[i]->type().get() != shape[i].second) {
        return false;
      }
    }
    return true;
  }

  /// Copies the model's attribute values (other than submodules) onto the copy
  /// (the caller holds model_slots_mutex); true when the description went stale.
  bool refresh(const std::vector<ObjectPtr>& objects) {
    bool stale = false;
    for (std::size_t i = 0; i < objects.size(); ++i) {
      const auto& from = objects[i];
      const auto& to = copy_objects[i];
      const std::size_t slots = std::min(from->slots().size(), to->slots().size());
      for (std::size_t s = 0; s < slots; ++s) {
        const c10::IValue& v = from->getSlot(s);
        if (v.isObject()) continue; // submodules: checked by same_modules
        const c10::IValue& mine = to->getSlot(s);
        if (described(v) && v.is(mine)) continue;
        stale = stale || described(v) || described(mine);
        to->setSlot(s, v);
      }
    }
    return stale;
  }

  /// Describes the copy again (its TorchScript index stays: same modules, same code).
  void redescribe() {
    auto index = std::move(description.script_index);
    description = describe(copy);
    description.script_index = std::move(index);
  }
};

namespace {

struct Cache {
  std::mutex mutex;
  std::list<std::shared_ptr<ScriptLease::Entry>> entries; // most recently used first
};

Cache& cache() {
  static Cache* c = new Cache(); // never destroyed: leases may end during exit
  return *c;
}

} // namespace

ScriptLease::ScriptLease(torch::jit::Module& model) : model_(model) {
  {
    std::lock_guard<std::mutex> reading(model_slots_mutex());
    objects_ = module_objects(model);
  }
  const auto& objects = objects_;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    c.entries.remove_if([](const auto& e) { return e->model.expired() && !e->busy; });
    for (auto it = c.entries.begin(); it != c.entries.end(); ++it) {
      const auto& e = *it;
      if (e->model.lock().get() != model._ivalue().get()) continue;
      if (e->busy) break; // another thread runs it: an uncached copy below
      if (!e->same_modules(objects)) {
        c.entries.erase(it); // rebuilt below
        break;
      }
      e->busy = true;
      entry_ = e;
      cached_ = true;
      c.entries.splice(c.entries.begin(), c.entries, it);
      break;
    }
  }
  if (entry_ != nullptr) {
    try {
      bool stale = false;
      {
        std::lock_guard<std::mutex> reading(model_slots_mutex());
        stale = entry_->refresh(objects);
      }
      if (stale) entry_->redescribe();
    } catch (...) {
      std::lock_guard<std::mutex> lock(cache().mutex);
      entry_->busy = false;
      throw;
    }
    return;
  }
  // (a cached entry's model has the same module objects and types: forward too)
  TORCHLENS_CHECK(model.find_method("forward").has_value(),
                  "the TorchScript module has no forward method");
  entry_ = std::make_shared<Entry>(model, objects);
  entry_->busy = true;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  const bool held = std::any_of(c.entries.begin(), c.entries.end(), [&](const auto& e) {
    return e->model.lock().get() == model._ivalue().get();
  });
  if (!held) {
    c.entries.push_front(entry_);
    cached_ = true;
    while (c.entries.size() > kMaxEntries) {
      auto victim = std::find_if(c.entries.rbegin(), c.entries.rend(),
                                 [](const auto& e) { return !e->busy; });
      if (victim == c.entries.rend()) break;
      c.entries.erase(std::next(victim).base());
    }
  }
}

ScriptLease::~ScriptLease() {
  try {
    std::lock_guard<std::mutex> writing(model_slots_mutex());
    copy_back(entry_->copy_objects, objects_);
  } catch (...) {
    // a destructor never throws; the model keeps what it had
  }
  if (cached_) {
    std::lock_guard<std::mutex> lock(cache().mutex);
    entry_->busy = false;
  }
}

torch::jit::Module& ScriptLease::module() {
  return entry_->copy;
}

c10::IValue ScriptLease::forward(const std::vector<c10::IValue>& inputs) {
  return entry_->forward(inputs);
}

const ModelDescription& ScriptLease::description() const {
  return entry_->description;
}

} // namespace torchlens::detail
