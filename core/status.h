// Error handling for moefold: absl::Status at API boundaries, MF_CHECK for invariants.
// abseil 20220623 ships neither CHECK nor status macros, so they are defined once here.
//
//   absl::StatusOr<int> Parse(absl::string_view s);
//   MF_ASSIGN_OR_RETURN(int n, Parse(text));   // returns the error to the caller
//   MF_CHECK_EQ(x.numel(), y.numel()) << "while adding";
#pragma once

#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moefold {

// Streams a message and aborts when destroyed: a failed invariant is a bug, not an input error.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  template <typename T>
  CheckFailure& operator<<(const T& v) {
    stream_ << v;
    return *this;
  }

 private:
  std::ostringstream stream_;
};

// Swallows the streamed message of a check that passed (never constructed at run time).
struct CheckVoidify {
  void operator&(const CheckFailure&) {}
};

}  // namespace moefold

#define MF_CHECK(cond) \
  (cond) ? (void)0 : ::moefold::CheckVoidify() & ::moefold::CheckFailure(__FILE__, __LINE__, #cond)

#define MF_CHECK_OP_(a, b, op)                                                             \
  ((a)op(b)) ? (void)0                                                                     \
             : ::moefold::CheckVoidify() &                                                 \
                   ::moefold::CheckFailure(__FILE__, __LINE__, #a " " #op " " #b) << "(" \
                                                                                 << (a)    \
                                                                                 << " vs " \
                                                                                 << (b)    \
                                                                                 << ") "
#define MF_CHECK_EQ(a, b) MF_CHECK_OP_(a, b, ==)
#define MF_CHECK_NE(a, b) MF_CHECK_OP_(a, b, !=)
#define MF_CHECK_LT(a, b) MF_CHECK_OP_(a, b, <)
#define MF_CHECK_LE(a, b) MF_CHECK_OP_(a, b, <=)
#define MF_CHECK_GT(a, b) MF_CHECK_OP_(a, b, >)
#define MF_CHECK_GE(a, b) MF_CHECK_OP_(a, b, >=)
#ifdef NDEBUG
#define MF_DCHECK(cond) (void)0
#else
#define MF_DCHECK(cond) MF_CHECK(cond)
#endif

#define MF_STATUS_CONCAT_INNER_(a, b) a##b
#define MF_STATUS_CONCAT_(a, b) MF_STATUS_CONCAT_INNER_(a, b)

#define MF_RETURN_IF_ERROR(expr)                               \
  do {                                                         \
    ::absl::Status mf_status_ = (expr);                        \
    if (!mf_status_.ok()) return mf_status_;                   \
  } while (0)

#define MF_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#define MF_ASSIGN_OR_RETURN(lhs, expr) \
  MF_ASSIGN_OR_RETURN_IMPL_(MF_STATUS_CONCAT_(mf_statusor_, __LINE__), lhs, expr)

namespace moefold {

// Prefixes a failed status's message with context ("layer 3: ..."), keeping its code.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace moefold
