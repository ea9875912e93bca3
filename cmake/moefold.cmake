# Helpers to declare a moefold library and its tests in one line each.

# moefold_library(NAME SRCS a.cc b.cc DEPS lib1 lib2)
function(moefold_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

# moefold_test(NAME SRCS a_test.cc DEPS lib1 [RANKS n ...] [LABELS l])
# A test with RANKS runs under mpirun with that many ranks (oversubscribed, root allowed); several
# rank counts build one binary and register NAME_np<n> for each.
#
# In a sanitizer build (-DMOEFOLD_SANITIZE=address,undefined: tools/setup.sh's build-sanitize) only
# the single-process tests (GPU ones and those driving the binaries aside) and the 2-rank case of
# MOEFOLD_SANITIZE_MPI_TESTS are registered and built by the target moefold_sanitizer_tests.
function(moefold_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;LABELS;RANKS" ${ARGN})
  if(MOEFOLD_SANITIZE)
    set(selected OFF)
    if(NOT ARG_RANKS AND NOT "gpu" IN_LIST ARG_LABELS AND NOT name MATCHES
       "${MOEFOLD_SANITIZE_EXCLUDE}")
      set(selected ON)
    elseif(name IN_LIST MOEFOLD_SANITIZE_MPI_TESTS AND "2" IN_LIST ARG_RANKS)
      set(selected ON)
      set(ARG_RANKS 2)
    endif()
    if(NOT selected)
      add_executable(${name} EXCLUDE_FROM_ALL ${ARG_SRCS})
      target_link_libraries(${name} PRIVATE ${ARG_DEPS} moefold_testing GTest::gtest GTest::gmock)
      return()
    endif()
    add_dependencies(moefold_sanitizer_tests ${name})
  endif()
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} moefold_testing GTest::gtest GTest::gmock)
  if(ARG_RANKS)
    target_link_libraries(${name} PRIVATE moefold_mpi_test_main)
  else()
    target_link_libraries(${name} PRIVATE moefold_test_main)
  endif()
  set(tests)
  list(LENGTH ARG_RANKS rank_counts)
  if(rank_counts EQUAL 1)
    add_test(NAME ${name}
             COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe
                     ${MPIEXEC_NUMPROC_FLAG} ${ARG_RANKS} $<TARGET_FILE:${name}>)
    list(APPEND tests ${name})
  elseif(rank_counts GREATER 1)
    foreach(ranks ${ARG_RANKS})
      add_test(NAME ${name}_np${ranks}
               COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe
                       ${MPIEXEC_NUMPROC_FLAG} ${ranks} $<TARGET_FILE:${name}>)
      list(APPEND tests ${name}_np${ranks})
    endforeach()
  else()
    add_test(NAME ${name} COMMAND ${name})
    list(APPEND tests ${name})
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${tests} PROPERTIES WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
                                           TIMEOUT ${ARG_TIMEOUT})
  if(ARG_LABELS)
    set_tests_properties(${tests} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
  if(MOEFOLD_SANITIZE)
    # MPI's and the runtime's own allocations at exit are not ours (tools/sanitizers/lsan.supp).
    # Under mpirun Open MPI leaves thousands of unsymbolised allocations at MPI_Finalize, so leak
    # checking is off there; address and undefined-behaviour errors stay fatal.
    set(leaks 1)
    if(ARG_RANKS)
      set(leaks 0)
    endif()
    set_tests_properties(${tests} PROPERTIES ENVIRONMENT
      "ASAN_OPTIONS=detect_leaks=${leaks}:abort_on_error=1;LSAN_OPTIONS=suppressions=${CMAKE_SOURCE_DIR}/tools/sanitizers/lsan.supp:print_suppressions=0;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
  endif()
endfunction()
