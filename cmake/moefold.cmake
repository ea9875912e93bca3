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
function(moefold_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;LABELS;RANKS" ${ARGN})
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
endfunction()
