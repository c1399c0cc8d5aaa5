// torchlens::Name (include/torchlens/graph/name.hpp): one stored copy per
// distinct string, shared by every vertex that names it. Torch-free.
#include <torchlens/graph/model_graph.hpp>

#include "support/doctest.hpp"

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

using torchlens::Name;

TEST_CASE("Name: equal texts share one stored copy, whatever they were made from") {
  const std::string text = "aten::conv2d";
  const Name a = text;
  const Name b = std::string_view("aten::conv2d");
  const Name c = "aten::conv2d";
  CHECK(&a.str() == &b.str());
  CHECK(&b.str() == &c.str());
  CHECK(&a.str() != &text);
  CHECK(a == b);
  CHECK(Name("aten::conv1d") != a);
  CHECK(sizeof(Name) == sizeof(void*)); // what makes an interned field cheaper than a string
  CHECK(Name().empty());
  CHECK(Name() == Name(""));
  CHECK(&Name().str() == &Name(std::string()).str());
}

TEST_CASE("Name reads like the string it stands for") {
  const Name n = "torchlens::base_update";
  CHECK(n == "torchlens::base_update");
  CHECK("torchlens::base_update" == n);
  CHECK(n == std::string("torchlens::base_update"));
  CHECK(std::string_view("torchlens::base_update") == n);
  CHECK(n != "torchlens::base");
  CHECK(n.size() == 22);
  CHECK(n.starts_with("torchlens::"));
  CHECK(n.rfind("::") == 9);
  CHECK(n.substr(11) == "base_update");
  CHECK(n.find("zz") == Name::npos);
  const std::string& ref = n;
  CHECK(ref == "torchlens::base_update");
  const std::string_view view = n;
  CHECK(view.data() == n.data());
  CHECK("op " + n + " at " + Name("x") == "op torchlens::base_update at x");
  CHECK(std::string("a") + n + std::string("b") == "atorchlens::base_updateb");
  std::string s = "[";
  s += n;
  CHECK(s == "[torchlens::base_update");
  std::ostringstream os;
  os << n << '|' << Name();
  CHECK(os.str() == "torchlens::base_update|");
}

TEST_CASE("Name orders and hashes by its text, so containers keyed by text agree") {
  CHECK(Name("add") < Name("mul"));
  CHECK(Name("mul") > "add");
  CHECK(Name("b") < std::string("c"));
  const std::set<Name> ordered{"relu", "add", "conv2d"};
  CHECK(*ordered.begin() == "add");
  CHECK(std::hash<Name>{}(Name("conv2d")) == std::hash<std::string_view>{}("conv2d"));
  CHECK(std::hash<Name>{}(Name()) == std::hash<std::string_view>{}(""));
  std::unordered_set<Name> seen{"a", "b"};
  CHECK(seen.count(Name(std::string("a"))) == 1);
  CHECK(seen.count(Name("c")) == 0);
  std::map<std::string, int> by_text{{"float32", 1}};
  CHECK(by_text.at(Name("float32")) == 1); // converts to const std::string&
}

TEST_CASE("Name: threads interning the same new texts get the same copies") {
  constexpr int kThreads = 4, kTexts = 2000;
  std::vector<std::vector<const std::string*>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&got, t] {
      for (int i = 0; i < kTexts; ++i) {
        // each thread walks the texts in a different order
        const int k = (i * (2 * t + 1)) % kTexts;
        got[static_cast<std::size_t>(t)].push_back(
            &Name("name_test.thread." + std::to_string(k)).str());
      }
    });
  }
  for (auto& th : threads) th.join();
  std::vector<const std::string*> first(kTexts);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kTexts; ++i) {
      const int k = (i * (2 * t + 1)) % kTexts;
      const std::string* p = got[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)];
      CHECK(*p == "name_test.thread." + std::to_string(k));
      if (t == 0)
        first[static_cast<std::size_t>(k)] = p;
      else
        CHECK(p == first[static_cast<std::size_t>(k)]);
    }
  }
}

TEST_CASE("Name: many distinct texts, each found again at its one copy") {
  // enough texts to grow the table's index many times over, with texts that
  // share long prefixes (as module and parameter addresses do)
  constexpr int kTexts = 50000;
  std::vector<const std::string*> first;
  first.reserve(kTexts);
  for (int i = 0; i < kTexts; ++i) {
    first.push_back(&Name("name_test.grow.layers." + std::to_string(i) + ".weight").str());
  }
  std::set<const std::string*> distinct(first.begin(), first.end());
  CHECK(distinct.size() == static_cast<std::size_t>(kTexts));
  int misplaced = 0;
  for (int i = kTexts - 1; i >= 0; --i) {
    const std::string text = "name_test.grow.layers." + std::to_string(i) + ".weight";
    const Name again(text);
    misplaced += &again.str() != first[static_cast<std::size_t>(i)] || again != text;
  }
  CHECK(misplaced == 0);
  CHECK(&Name("name_test.grow.layers.7.weight").str() == first[7]);
  CHECK(Name(std::string_view("")).empty()); // the empty text is never stored
}

TEST_CASE("OpNode's repeated strings are Names: copying a vertex copies pointers") {
  torchlens::OpNode a;
  a.op_name = "aten::linear";
  a.dtype = "float32";
  a.modules = {{"encoder.layers.0", "TransformerEncoderLayer", 2}};
  const torchlens::OpNode b = a;
  CHECK(&b.op_name.str() == &a.op_name.str());
  CHECK(&b.modules[0].address.str() == &a.modules[0].address.str());
  CHECK(b.modules[0] == a.modules[0]);
  CHECK(b.modules[0].address == "encoder.layers.0");
}
